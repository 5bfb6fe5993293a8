# coordinator/frontend: the server (HTTP/1.1 + SSE, gRPC over HTTP/2, /metrics) and the web
# chat page with its icon, which are embedded into the binary as C arrays generated in the
# build tree.
file(GLOB TSR_FRONTEND_SRC CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/*.c)
set(TSR_WEB_EMBEDDED)
foreach(pair "index.html;tsr__web_index_html" "favicon.svg;tsr__web_favicon_svg")
  list(GET pair 0 f)
  list(GET pair 1 sym)
  set(out ${CMAKE_BINARY_DIR}/coordinator/frontend/${sym}.c)
  add_custom_command(
    OUTPUT ${out}
    COMMAND ${CMAKE_COMMAND} -DIN=${CMAKE_CURRENT_LIST_DIR}/web/${f} -DOUT=${out} -DNAME=${sym}
            -P ${CMAKE_CURRENT_LIST_DIR}/embed.cmake
    DEPENDS ${CMAKE_CURRENT_LIST_DIR}/web/${f} ${CMAKE_CURRENT_LIST_DIR}/embed.cmake
    COMMENT "embedding web/${f}")
  list(APPEND TSR_WEB_EMBEDDED ${out})
endforeach()
target_sources(tsr_coordinator PRIVATE ${TSR_FRONTEND_SRC} ${TSR_WEB_EMBEDDED})
