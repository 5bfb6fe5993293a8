# coordinator/frontend: the server (HTTP/1.1 + SSE, gRPC over HTTP/2, /metrics) and the web
# chat page, which is embedded into the binary as a C array generated in the build tree.
file(GLOB TSR_FRONTEND_SRC CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/*.c)
set(TSR_WEB_HTML ${CMAKE_CURRENT_LIST_DIR}/web/index.html)
set(TSR_WEB_C ${CMAKE_BINARY_DIR}/coordinator/frontend/web_index.c)
add_custom_command(
  OUTPUT ${TSR_WEB_C}
  COMMAND ${CMAKE_COMMAND} -DIN=${TSR_WEB_HTML} -DOUT=${TSR_WEB_C} -P ${CMAKE_CURRENT_LIST_DIR}/embed.cmake
  DEPENDS ${TSR_WEB_HTML} ${CMAKE_CURRENT_LIST_DIR}/embed.cmake
  COMMENT "embedding web/index.html")
target_sources(tsr_coordinator PRIVATE ${TSR_FRONTEND_SRC} ${TSR_WEB_C})
