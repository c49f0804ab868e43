# Install-time step of `cmake --install`: writes hookd.service and the config
# template with the prefix the install really uses (--prefix may differ from
# the configured one) and installs them with the sysusers entry.
# Set by the install(CODE) before it: HOOKD_SRC, HOOKD_OUT, HOOKD_BINDIR,
# HOOKD_LIBDIR, HOOKD_DATADIR, HOOKD_SYSCONFDIR, HOOKD_UNITDIR (relative to
# the prefix unless absolute).
set(prefix "${CMAKE_INSTALL_PREFIX}")
function(hookd_full var rel)
  if(IS_ABSOLUTE "${rel}")
    set(${var} "${rel}" PARENT_SCOPE)
  else()
    set(${var} "${prefix}/${rel}" PARENT_SCOPE)
  endif()
endfunction()
hookd_full(HOOKD_BIN_DIR "${HOOKD_BINDIR}")
hookd_full(HOOKD_PLUGIN_DIR "${HOOKD_LIBDIR}/hookd/plugins")
hookd_full(HOOKD_SHARE_DIR "${HOOKD_DATADIR}/hookd")
hookd_full(unit_dir "${HOOKD_UNITDIR}")
hookd_full(sysusers_dir "lib/sysusers.d")
# Like GNUInstallDirs: the prefix /usr keeps its config in /etc.
if(prefix STREQUAL "/usr" AND NOT IS_ABSOLUTE "${HOOKD_SYSCONFDIR}")
  set(HOOKD_SYSCONF_DIR "/etc/hookd")
else()
  hookd_full(HOOKD_SYSCONF_DIR "${HOOKD_SYSCONFDIR}/hookd")
endif()
configure_file("${HOOKD_SRC}/packaging/hookd.service.in" "${HOOKD_OUT}/hookd.service" @ONLY)
configure_file("${HOOKD_SRC}/packaging/hookd.jsonc.in" "${HOOKD_OUT}/hookd.jsonc" @ONLY)
file(INSTALL "${HOOKD_OUT}/hookd.service" DESTINATION "${unit_dir}")
file(INSTALL "${HOOKD_OUT}/hookd.jsonc" DESTINATION "${HOOKD_SHARE_DIR}")
file(INSTALL "${HOOKD_SRC}/packaging/hookd.sysusers" DESTINATION "${sysusers_dir}"
     RENAME hookd.conf)
