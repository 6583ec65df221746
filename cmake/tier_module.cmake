# bundle-edge-tier.so, included by the top-level CMakeLists.txt after the bundle-edge target.
# The origin tier (edge/pg, edge/s3 and their libpq/libcurl) is a module loaded only by a node
# that uses it (edge/tier_loader.hpp), so that edges never map those libraries. It is built
# next to the executable, where the loader looks, whenever the executable is. It resolves
# what it uses of edge/core and edge/store from the executable, which exports just those
# symbols (cmake/tier_exports.cmake; not linked against it: that would make a cycle).
add_library(edge_tier_module_objects OBJECT edge/tier_module.cpp)
set_target_properties(edge_tier_module_objects PROPERTIES POSITION_INDEPENDENT_CODE ON)
target_link_libraries(edge_tier_module_objects PRIVATE edge_pg_objects edge_s3_objects)
set(edge_tier_objects $<TARGET_OBJECTS:edge_tier_module_objects> $<TARGET_OBJECTS:edge_pg_objects>
                      $<TARGET_OBJECTS:edge_s3_objects>)
add_library(bundle-edge-tier MODULE ${edge_tier_objects})
set_target_properties(bundle-edge-tier PROPERTIES PREFIX "" LIBRARY_OUTPUT_DIRECTORY "${CMAKE_BINARY_DIR}")
target_link_libraries(bundle-edge-tier PRIVATE PkgConfig::LIBPQ CURL::libcurl spdlog::spdlog PkgConfig::XXHASH)
set(edge_tier_exports "${CMAKE_BINARY_DIR}/tier-exports.list")
add_custom_command(
  OUTPUT "${edge_tier_exports}"
  COMMAND ${CMAKE_COMMAND} -DNM=${CMAKE_NM} -DOUT=${edge_tier_exports} "-DOBJECTS=${edge_tier_objects}"
          -P ${PROJECT_SOURCE_DIR}/cmake/tier_exports.cmake
  DEPENDS ${edge_tier_objects} ${PROJECT_SOURCE_DIR}/cmake/tier_exports.cmake
  COMMENT "Listing the symbols the tier module takes from bundle-edge" VERBATIM)
add_custom_target(edge_tier_exports DEPENDS "${edge_tier_exports}")
add_dependencies(bundle-edge bundle-edge-tier edge_tier_exports)
target_link_options(bundle-edge PRIVATE "LINKER:--dynamic-list=${edge_tier_exports}")
set_property(TARGET bundle-edge APPEND PROPERTY LINK_DEPENDS "${edge_tier_exports}")
