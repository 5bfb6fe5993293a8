# cmake -DIN=file -DOUT=file.c -P embed.cmake: the file's bytes as
# `const unsigned char tsr__web_index_html[]` plus its length (for the server to serve).
file(READ ${IN} hex HEX)
string(LENGTH "${hex}" n)
math(EXPR len "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" body "${body}")
file(WRITE ${OUT} "/* generated from web/index.html by embed.cmake: do not edit */\n#include <stddef.h>\n"
  "const unsigned char tsr__web_index_html[] = {\n${body}0x00};\nconst size_t tsr__web_index_html_len = ${len};\n")
