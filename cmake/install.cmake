# Install rules and the exported CMake package, so that another project can write
#
#   find_package(flashattn CONFIG REQUIRED)
#   target_link_libraries(app PRIVATE flashattn::flashattn)
#
# Off by default when flashattn is a subproject (add_subdirectory / FetchContent), where the parent
# decides what to install; the Python build turns it off to keep the wheel to the module alone.
option(FLASHATTN_INSTALL "Generate the install rules and the CMake package" ${PROJECT_IS_TOP_LEVEL})
if(NOT FLASHATTN_INSTALL)
  return()
endif()

include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(FLASHATTN_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/flashattn"
    CACHE STRING "Where flashattnConfig.cmake is installed, relative to the prefix")
mark_as_advanced(FLASHATTN_INSTALL_CMAKEDIR)

# flashattn: the static C++ library; flashattn_c: the C ABI as a shared library, for FFI.
install(TARGETS flashattn flashattn_c
  EXPORT flashattnTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT flashattn_Development
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT flashattn_Runtime
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT flashattn_Runtime
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY include/flashattn
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  COMPONENT flashattn_Development
  FILES_MATCHING PATTERN "*.h")

install(EXPORT flashattnTargets
  NAMESPACE flashattn::
  DESTINATION ${FLASHATTN_INSTALL_CMAKEDIR}
  COMPONENT flashattn_Development)
# The same targets for use straight from this build tree (CMAKE_PREFIX_PATH=<build dir>).
export(EXPORT flashattnTargets
  NAMESPACE flashattn::
  FILE ${PROJECT_BINARY_DIR}/flashattnTargets.cmake)

# The static library carries its private dependencies (Threads, and CUDA::cudart_static when built
# with CUDA) as link-only entries, so the package must find them again.
configure_package_config_file(cmake/flashattnConfig.cmake.in
  ${PROJECT_BINARY_DIR}/flashattnConfig.cmake
  INSTALL_DESTINATION ${FLASHATTN_INSTALL_CMAKEDIR})
# 0.x: a minor version may break the API, so only the same major.minor is compatible.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/flashattnConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES
  ${PROJECT_BINARY_DIR}/flashattnConfig.cmake
  ${PROJECT_BINARY_DIR}/flashattnConfigVersion.cmake
  DESTINATION ${FLASHATTN_INSTALL_CMAKEDIR}
  COMPONENT flashattn_Development)
