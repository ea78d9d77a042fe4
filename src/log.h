/* log.h - leveled logging to stderr.
 *
 * Every line carries a UTC timestamp, the level and the node id, so that the
 * interleaved output of several nodes in one terminal (or one CI log) can be
 * read apart.  Logging is synchronous and unbuffered: a line written just
 * before a crash is a line the operator sees. */
#ifndef RAFTKV_LOG_H
#define RAFTKV_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Set the node id printed on every line (copied; truncated to 63 bytes). */
void log_set_node(const char *node_id);

/* Only lines at or above this level are printed.  Default LOG_INFO. */
void log_set_level(enum log_level level);
enum log_level log_get_level(void);

/* Parse "debug", "info", "warn" or "error".  Returns 0, or -1 if unknown. */
int log_level_parse(const char *name, enum log_level *out);

void log_write(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_debug(...)                                                        \
    do {                                                                      \
        if (log_get_level() <= LOG_DEBUG) log_write(LOG_DEBUG, __VA_ARGS__);  \
    } while (0)
#define log_info(...) log_write(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_write(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)

#endif
