/* The plugin author's commands: `hookd plugins [MODULE]` (what is installed, and a module's
 * options) and `hookd try` (one delivery, no service). */
#ifndef HOOKD_CLI_PLUGINS_H
#define HOOKD_CLI_PLUGINS_H

/* Exit codes beyond main's 0 (success), 1 (runtime failure) and 2 (usage). */
#define CLI_EXIT_TEMPFAIL 75 /* sysexits.h EX_TEMPFAIL: `try` got RETRY */

/* `hookd plugins [MODULE] -c FILE`: with no argument, one line per module
 * found in plugin_dirs (name, version, ABI, description; a module that does
 * not load says why); with a module name, its descriptor and option table as
 * help. argv holds the arguments after the command. Returns 0, 1 when a named
 * module cannot be loaded, 2 for a bad config or usage. Main thread. */
int cli_plugins(const char *file, int argc, char **argv);

/* `hookd try -c FILE --instance NAME EVENT.json [--attempt N] [--source S]`:
 * builds the instance from the config (options, init), decodes the event
 * with the source's envelope rules, runs one deliver() on this thread, prints
 * the outcome, message and retry-after to stdout (the instance's log lines
 * go to stderr, at debug level), then destroys the instance. Nothing is
 * stored and no socket is opened. Returns 0 (OK), 75 (RETRY), 1 (FAIL) or 2
 * (bad config, usage or event file). */
int cli_try(const char *file, int argc, char **argv);

#endif
