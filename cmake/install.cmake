include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(BUDGET_INSTALL_TARGETS budget_static)
if(BUDGET_BUILD_SHARED)
  list(APPEND BUDGET_INSTALL_TARGETS budget_shared)
endif()
install(TARGETS ${BUDGET_INSTALL_TARGETS} EXPORT budgetTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY include/budget DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES LICENSE DESTINATION ${CMAKE_INSTALL_DOCDIR})  # share/doc/budget/LICENSE
install(FILES ${PROJECT_BINARY_DIR}/include/budget/version.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/budget)
install(EXPORT budgetTargets NAMESPACE budget:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/budget)
configure_package_config_file(cmake/budgetConfig.cmake.in ${PROJECT_BINARY_DIR}/budgetConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/budget)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/budgetConfigVersion.cmake COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/budgetConfig.cmake ${PROJECT_BINARY_DIR}/budgetConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/budget)

set(BUDGET_PC_REQUIRES_PRIVATE "sqlite3")
if(BUDGET_WITH_REDIS)
  string(APPEND BUDGET_PC_REQUIRES_PRIVATE " hiredis")
endif()
# The .pc file finds its prefix relative to itself, so an installed tree can be moved.
file(RELATIVE_PATH BUDGET_PC_PREFIX_REL "/x/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/x")
configure_file(cmake/budget.pc.in ${PROJECT_BINARY_DIR}/budget.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/budget.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
