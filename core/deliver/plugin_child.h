/* Process isolation, the child's side: hookd re-executed to host one plugin instance (init once,
 * deliver() on its own threads). */
#ifndef HOOKD_PLUGIN_CHILD_H
#define HOOKD_PLUGIN_CHILD_H

/* The hidden command hookd starts its plugin children with:
 * `hookd plugin-child INSTANCE`, descriptors 0-3 and up set as plugin_wire.h
 * says. Not for people: run by hand it explains itself and exits 2. */
#define PLUGIN_CHILD_COMMAND "plugin-child"

/*
 * What the child does, in order: closes every descriptor it was not given,
 * reads INIT from hookd, switches to the configured user when hookd started
 * it as root, sets PR_SET_NO_NEW_PRIVS and no core dumps, loads the module
 * (dlopen), runs init on its main thread with hookd's own config getters,
 * templates and HTTP client, and reports. Then one thread per data channel
 * runs deliver() for each DELIVER frame; host->log() from a call goes back
 * on that call's channel, from anywhere else on the control socket. EXIT
 * (hookd) ends it: running calls finish, destroy runs, it exits 0. hookd
 * going away (end of file on the control socket) ends it at once.
 * SIGTERM does nothing: a service stop signals every process of the
 * service, and hookd, not the signal, decides when its plugins stop.
 */
int plugin_child_main(int argc, char **argv);

#endif
