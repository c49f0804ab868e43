/* The operator's delivery controls on the command line: `hookd pause|resume INSTANCE` and
 * `hookd replay` (back-fill stored events to an instance). */
#ifndef HOOKD_CLI_CONTROLS_H
#define HOOKD_CLI_CONTROLS_H

/*
 * Each works on the spool file whether hookd runs or not: the CLI writes
 * what it asks for into the spool (its own connection), and a running hookd
 * applies it within a second; a stopped one when it starts.
 */

/* `hookd pause INSTANCE -c FILE` (paused 1) or `hookd resume INSTANCE -c
 * FILE` (0). argv holds the arguments after the command. Returns 0, 1 when
 * the spool cannot be written, 2 for a bad config, usage or an instance the
 * config does not name. */
int cli_pause(const char *file, int paused, int argc, char **argv);

/* `hookd replay --since DURATION [--type PATTERN] [--source NAME] --to
 * INSTANCE [--dry-run] -c FILE`: the stored events received within
 * DURATION, matching the filters, delivered again to INSTANCE in accept
 * order (whether or not they were routed to it before). --dry-run prints
 * "N events" and changes nothing. On a terminal, shows progress (queued,
 * delivered, rate, time left) until every event is delivered or dead;
 * Ctrl-C stops watching, not the replay. Returns 0, 1 on a spool error, 2
 * for a bad config or usage. */
int cli_replay(const char *file, int argc, char **argv);

#endif
