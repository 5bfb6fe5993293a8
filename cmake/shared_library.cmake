# libtessera: the layers as one shared library for programs that embed Tessera through the
# engine's public C API (coordinator/engine.h, installed as <tessera/engine.h>), with a
# pkg-config file:  cc app.c $(pkg-config --cflags --libs tessera)
# The layer archives are built position-independent, so the shared library is their union.
add_library(tessera_shared SHARED ${CMAKE_SOURCE_DIR}/common/empty.c)
set_target_properties(tessera_shared PROPERTIES OUTPUT_NAME tessera VERSION ${PROJECT_VERSION}
  SOVERSION ${PROJECT_VERSION_MAJOR})
add_dependencies(tessera_shared tsr_coordinator tsr_worker tsr_kernels tsr_common tsr_proto)
target_link_options(tessera_shared PRIVATE -Wl,--whole-archive $<TARGET_FILE:tsr_coordinator>
  $<TARGET_FILE:tsr_worker> $<TARGET_FILE:tsr_kernels> $<TARGET_FILE:tsr_common> -Wl,--no-whole-archive)
# and the layers again, normally: their transitive dependencies (http_parser, ...) come with them
target_link_libraries(tessera_shared PRIVATE tsr_coordinator tsr_worker tsr_kernels tsr_common tsr_proto MPI::MPI_C PkgConfig::HWLOC PkgConfig::LIBUV PkgConfig::NGHTTP2 PkgConfig::PROTOBUFC
  PkgConfig::CJSON tsr_openblas Threads::Threads m)
if(TSR_HAVE_CUDA)
  target_link_libraries(tessera_shared PRIVATE tsr_kernels_cuda)
endif()
# clang links its sanitizer runtimes into executables only, so a sanitized library's
# __asan_* / __ubsan_* references stay undefined until a program loads it
if(NOT (TESSERA_SANITIZE OR TESSERA_FUZZ))
  target_link_options(tessera_shared PRIVATE -Wl,--no-undefined)
endif()

include(GNUInstallDirs)
install(TARGETS tessera_shared LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
# The public header and the headers it includes, in their folders under include/tessera/ so
# its own quoted includes ("common/status.h", ...) resolve next to it.
install(FILES ${CMAKE_SOURCE_DIR}/coordinator/engine.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/tessera)
foreach(h common/status.h common/gguf.h common/ggml_quants.h coordinator/chat_template.h coordinator/stop.h coordinator/tokenizer.h
          worker/sampling.h)
  get_filename_component(dir ${h} DIRECTORY)
  install(FILES ${CMAKE_SOURCE_DIR}/${h} DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/tessera/${dir})
endforeach()
# tessera.pc names its prefix relative to itself (${pcfiledir}/../..), not the configure-time
# CMAKE_INSTALL_PREFIX, so an install to another prefix gets a pkg-config file that points at it
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
  set(TSR_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
else()
  file(RELATIVE_PATH TSR_PC_UP "/tsr/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/tsr")
  string(REGEX REPLACE "/$" "" TSR_PC_UP "${TSR_PC_UP}")
  set(TSR_PC_PREFIX "\${pcfiledir}/${TSR_PC_UP}")
endif()
configure_file(${CMAKE_SOURCE_DIR}/cmake/tessera.pc.in ${CMAKE_BINARY_DIR}/tessera.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/tessera.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
