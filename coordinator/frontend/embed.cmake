# cmake -DIN=file -DOUT=file.c -DNAME=sym -P embed.cmake: the file's bytes as
# `const unsigned char sym[]` (NUL-terminated) plus `const size_t sym_len` (for the server to
# serve).  NAME defaults to tsr__web_index_html.
if(NOT NAME)
  set(NAME tsr__web_index_html)
endif()
file(READ ${IN} hex HEX)
string(LENGTH "${hex}" n)
math(EXPR len "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" body "${body}")
get_filename_component(src ${IN} NAME)
file(WRITE ${OUT} "/* generated from ${src} by embed.cmake: do not edit */\n#include <stddef.h>\n"
  "const unsigned char ${NAME}[] = {\n${body}0x00};\nconst size_t ${NAME}_len = ${len};\n")
