# The tokenizer's Unicode tables (categories, White_Space, NFC data), generated at build time by
# gen_unicode.py from python3's unicodedata into the build tree (never committed).
find_package(Python3 REQUIRED COMPONENTS Interpreter)
set(TSR_UNICODE_TABLES ${CMAKE_CURRENT_BINARY_DIR}/tsr_unicode_tables.h)
add_custom_command(OUTPUT ${TSR_UNICODE_TABLES}
  COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/gen_unicode.py ${TSR_UNICODE_TABLES}
  DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/gen_unicode.py
  COMMENT "Generating the tokenizer's Unicode tables" VERBATIM)
target_sources(tsr_coordinator PRIVATE ${TSR_UNICODE_TABLES})
target_include_directories(tsr_coordinator PRIVATE ${CMAKE_CURRENT_BINARY_DIR})
