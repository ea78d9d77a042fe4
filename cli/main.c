/* main.c - raftkv-cli's entry point: command-line parsing, --help, and
 * dispatch to the subcommands in kv.c and cluster.c.
 *
 * Everything the command line can get wrong is caught here, before any
 * request is sent, so a usage error (exit 2) never has side effects. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#ifndef RAFTKV_VERSION
#define RAFTKV_VERSION "0.0.0"
#endif
#ifndef RAFTKV_GITREV
#define RAFTKV_GITREV "unknown"
#endif

#define CLI_DEFAULT_ENDPOINT "127.0.0.1:8222"
#define CLI_DEFAULT_TIMEOUT_MS 10000L
#define CLI_MAX_TIMEOUT_S 86400.0

/* One source line per output line; kept under 80 columns. */
/* clang-format off */
static const char cli_help[] =
    "Usage: raftkv-cli [flags] COMMAND [ARGS...]\n"
    "\n"
    "A command-line client for raftkv's HTTP API (docs/api.md).\n"
    "\n"
    "Key-value commands:\n"
    "  get KEY                print KEY's value and a newline (--raw: the\n"
    "                         exact bytes, no newline); a missing key exits 1\n"
    "  put KEY VALUE          write VALUE (\"-\": read it from stdin, binary\n"
    "                         safe); prints \"OK index=N version=V\", N being\n"
    "                         the Raft index the write committed at (the\n"
    "                         key's new mod_index)\n"
    "  cas KEY MOD_INDEX VALUE\n"
    "                         write only if KEY's mod_index is MOD_INDEX (0:\n"
    "                         only if KEY does not exist); a mismatch exits 1\n"
    "                         naming the key's current mod_index,\n"
    "                         create_index and version\n"
    "  del KEY [--cas MOD_INDEX]\n"
    "                         delete KEY (with --cas: only at that\n"
    "                         mod_index); prints \"OK index=N deleted=BOOL\";\n"
    "                         deleting a missing key is not an error\n"
    "  list [--prefix P | --start A [--end B]] [--limit N] [--keys]\n"
    "                         keys in byte order starting with P, or with\n"
    "                         A <= key < B (no --end: to the last key), or\n"
    "                         all; one \"KEY<TAB>VALUE\" line each (--keys:\n"
    "                         just KEY). Follows the server's continuation\n"
    "                         tokens to the end, or to N keys with --limit.\n"
    "                         Pages are separate reads: writes made while\n"
    "                         listing may or may not show.\n"
    "\n"
    "Cluster commands:\n"
    "  members                table of members; \"*\" marks the leader\n"
    "  add NAME RAFT_ADDR HTTP_ADDR\n"
    "                         add a server: standby first, voter once\n"
    "                         caught up (may need a larger --timeout)\n"
    "  remove NAME            remove a member (a leader hands over first)\n"
    "  leader transfer [NAME] move leadership to NAME, or to another voter\n"
    "  status                 the answering node's status as \"key: value\"\n"
    "  help                   this text\n"
    "\n"
    "Flags may go anywhere; --flag VALUE, --flag=VALUE and -flag all\n"
    "work. \"--\" ends the flags, for a key or value starting with \"-\".\n"
    "  --endpoints LIST       comma-separated HOST:PORT (or http://HOST:PORT)\n"
    "                         of nodes to try in order; default\n"
    "                         $RAFTKV_ENDPOINTS, else 127.0.0.1:8222\n"
    "  --consistency MODE     reads (get, list): linearizable (the server's\n"
    "                         default) or stale (served locally, may lag)\n"
    "  --json                 print the server's JSON answer as is, one\n"
    "                         line, error answers included; get asks for\n"
    "                         the ?format=json form (value in base64), list\n"
    "                         prints one line per page\n"
    "  --timeout SECONDS      limit for each HTTP attempt (default 10,\n"
    "                         fractions allowed); connecting is capped at 5 s\n"
    "  --help, --version\n"
    "\n"
    "Human output escapes backslashes and control bytes in keys and\n"
    "values as \\\\, \\n, \\t, \\r or \\xNN, so one entry stays one line;\n"
    "other bytes (UTF-8 included) are printed as they are. get prints\n"
    "values unescaped.\n"
    "\n"
    "Any node serves any request, so endpoints are tried in order: a\n"
    "refused connection, a timeout or a 503 (after its Retry-After, at most\n"
    "5 s) moves on to the next. The list is walked at most twice, with at\n"
    "least 4 attempts in all. 307 redirects are followed (at most 3). A\n"
    "write retried after an attempt with an unknown outcome may apply\n"
    "twice; a failure then says so. Keys are percent-encoded in URLs\n"
    "(\"a/b\", spaces, UTF-8).\n"
    "\n"
    "Exit status: 0 success; 1 the operation failed (key not found,\n"
    "compare failed, any other error answer); 2 usage error; 3 no endpoint\n"
    "could serve the request (unreachable, timed out or 503 on every\n"
    "attempt). Errors are one line on stderr.\n";
/* clang-format on */

enum flag_id
{
    F_ENDPOINTS,
    F_CONSISTENCY,
    F_JSON,
    F_TIMEOUT,
    F_HELP,
    F_VERSION,
    F_PREFIX,
    F_START,
    F_END,
    F_LIMIT,
    F_KEYS,
    F_RAW,
    F_CAS,
    N_FLAGS
};

struct cli_flag
{
    const char *name;
    int takes_value;
    const char *only_for; /* the one command that takes it; NULL: all */
};

static const struct cli_flag cli_flags[N_FLAGS] = {
    [F_ENDPOINTS] = {"endpoints", 1, NULL},
    [F_CONSISTENCY] = {"consistency", 1, NULL},
    [F_JSON] = {"json", 0, NULL},
    [F_TIMEOUT] = {"timeout", 1, NULL},
    [F_HELP] = {"help", 0, NULL},
    [F_VERSION] = {"version", 0, NULL},
    [F_PREFIX] = {"prefix", 1, "list"},
    [F_START] = {"start", 1, "list"},
    [F_END] = {"end", 1, "list"},
    [F_LIMIT] = {"limit", 1, "list"},
    [F_KEYS] = {"keys", 0, "list"},
    [F_RAW] = {"raw", 0, "get"},
    [F_CAS] = {"cas", 1, "del"},
};

struct cli_command
{
    const char *name;
    int min_args, max_args;
    const char *usage;
    const char *arg0; /* what the first argument is, for messages */
    int (*run)(struct cli_client *c, const struct cli_opts *o);
};

static const struct cli_command cli_commands[] = {
    {"get", 1, 1, "get KEY [--raw]", "KEY", cli_cmd_get},
    {"put", 2, 2, "put KEY VALUE", "KEY", cli_cmd_put},
    {"cas", 3, 3, "cas KEY MOD_INDEX VALUE", "KEY", cli_cmd_cas},
    {"del", 1, 1, "del KEY [--cas MOD_INDEX]", "KEY", cli_cmd_del},
    {"list", 0, 0,
     "list [--prefix P | --start A [--end B]] [--limit N] [--keys]", NULL,
     cli_cmd_list},
    {"members", 0, 0, "members", NULL, cli_cmd_members},
    {"add", 3, 3, "add NAME RAFT_ADDR HTTP_ADDR", "NAME", cli_cmd_add},
    {"remove", 1, 1, "remove NAME", "NAME", cli_cmd_remove},
    {"leader", 1, 2, "leader transfer [NAME]", NULL, cli_cmd_leader},
    {"status", 0, 0, "status", NULL, cli_cmd_status},
};

/* Every usage error is one line naming what was wrong. */
__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt,
                                                             ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("raftkv-cli: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs(" (see raftkv-cli --help)\n", stderr);
    va_end(ap);
    return CLI_EXIT_USAGE;
}

static void free_endpoints(struct cli_opts *o)
{
    for (size_t i = 0; i < o->n_endpoints; i++)
        free(o->endpoints[i]);
    free(o->endpoints);
    o->endpoints = NULL;
    o->n_endpoints = 0;
}

/* HOST:PORT with an optional http:// or https:// in front (and a trailing
 * "/" tolerated); IPv6 hosts in brackets. */
static int valid_endpoint(const char *s, size_t n)
{
    if (n > 7 && strncmp(s, "http://", 7) == 0) {
        s += 7;
        n -= 7;
    } else if (n > 8 && strncmp(s, "https://", 8) == 0) {
        s += 8;
        n -= 8;
    }
    if (n > 0 && s[n - 1] == '/')
        n--;
    const char *colon = NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ':')
            colon = s + i;
        if (s[i] == '/' || s[i] == '?' || s[i] == '#' || s[i] == '@' ||
            s[i] == ' ')
            return 0;
    }
    if (colon == NULL || colon == s || colon[-1] == ':')
        return 0;
    size_t digits = n - (size_t)(colon + 1 - s);
    if (digits == 0 || digits > 5)
        return 0;
    unsigned port = 0;
    for (size_t i = 0; i < digits; i++) {
        if (colon[1 + i] < '0' || colon[1 + i] > '9')
            return 0;
        port = port * 10 + (unsigned)(colon[1 + i] - '0');
    }
    return port >= 1 && port <= 65535;
}

static int parse_endpoints(struct cli_opts *o, const char *list,
                           const char *source)
{
    free_endpoints(o);
    const char *p = list;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        while (n > 0 && (*p == ' ' || *p == '\t')) {
            p++;
            n--;
        }
        while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        if (n > 0) {
            char *item = cli_xrealloc(NULL, n + 1);
            memcpy(item, p, n);
            item[n] = '\0';
            if (!valid_endpoint(item, n)) {
                usage_error("%s: bad endpoint '%s', want HOST:PORT", source,
                            item);
                free(item);
                return -1;
            }
            if (n > 1 && item[n - 1] == '/')
                item[n - 1] = '\0';
            o->endpoints = cli_xrealloc(o->endpoints, (o->n_endpoints + 1) *
                                                          sizeof *o->endpoints);
            o->endpoints[o->n_endpoints++] = item;
        }
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    if (o->n_endpoints == 0) {
        usage_error("%s: no endpoint given", source);
        return -1;
    }
    return 0;
}

static int parse_timeout(struct cli_opts *o, const char *s)
{
    char *end = NULL;
    errno = 0;
    double secs = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !isfinite(secs) ||
        secs <= 0 || secs > CLI_MAX_TIMEOUT_S) {
        usage_error("--timeout: bad value '%s', want seconds > 0", s);
        return -1;
    }
    o->timeout_ms = (long)(secs * 1000.0);
    if (o->timeout_ms < 1)
        o->timeout_ms = 1; /* libcurl takes 0 as "no limit" */
    return 0;
}

/* Applies one flag's value; returns 0 or a usage error already printed. */
static int set_flag(struct cli_opts *o, enum flag_id id, const char *value)
{
    switch (id) {
    case F_ENDPOINTS:
        return parse_endpoints(o, value, "--endpoints");
    case F_CONSISTENCY:
        if (strcmp(value, "linearizable") != 0 && strcmp(value, "stale") != 0)
            return usage_error("--consistency: bad value '%s', want "
                               "linearizable or stale",
                               value);
        o->consistency = value;
        return 0;
    case F_TIMEOUT:
        return parse_timeout(o, value);
    case F_PREFIX:
        o->prefix = value;
        return 0;
    case F_START:
        o->start = value;
        return 0;
    case F_END:
        o->end = value;
        return 0;
    case F_LIMIT:
        if (cli_parse_u64(value, &o->limit) != 0 || o->limit == 0)
            return usage_error("--limit: bad value '%s', want a count >= 1",
                               value);
        o->have_limit = 1;
        return 0;
    case F_CAS:
        if (cli_parse_u64(value, &o->cas) != 0)
            return usage_error("--cas: bad value '%s', want a mod_index",
                               value);
        o->have_cas = 1;
        return 0;
    case F_JSON:
        o->json = 1;
        return 0;
    case F_KEYS:
        o->keys = 1;
        return 0;
    case F_RAW:
        o->raw = 1;
        return 0;
    case F_HELP:
    case F_VERSION:
    case N_FLAGS:
        break;
    }
    return 0;
}

/* "--name", "--name=value", "-name", "-name=value" -> the flag, or -1.
 * A single-dash word that is not a flag name is not a flag at all, so a
 * value such as "-5" needs no "--". */
static int match_flag(const char *arg, const char **value, int *is_flag)
{
    const char *name = arg + 1;
    *is_flag = 0;
    *value = NULL;
    if (arg[0] != '-' || arg[1] == '\0')
        return -1;
    if (arg[1] == '-')
        name = arg + 2;
    const char *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    for (int id = 0; id < N_FLAGS; id++) {
        if (strlen(cli_flags[id].name) == len &&
            strncmp(cli_flags[id].name, name, len) == 0) {
            *is_flag = 1;
            *value = eq ? eq + 1 : NULL;
            return id;
        }
    }
    if (arg[1] == '-' || strcmp(arg, "-h") == 0)
        *is_flag = 1; /* an unknown --flag, or -h */
    return strcmp(arg, "-h") == 0 ? F_HELP : -1;
}

enum
{
    PARSED,
    WANT_HELP,
    WANT_VERSION
};

/* Fills o and returns PARSED/WANT_HELP/WANT_VERSION, or -1 after printing
 * a usage error.  `given[id]` keeps the spelling used, for messages. */
static int parse_args(int argc, char **argv, struct cli_opts *o,
                      const char **given)
{
    int positional_only = 0;
    int want = PARSED;

    o->args = cli_xrealloc(NULL, (size_t)argc * sizeof *o->args);
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *value;
        int is_flag;

        if (!positional_only && strcmp(arg, "--") == 0) {
            positional_only = 1;
            continue;
        }
        int id = positional_only ? -1 : match_flag(arg, &value, &is_flag);
        if (positional_only || !is_flag) {
            if (o->command == NULL)
                o->command = arg;
            else
                o->args[o->n_args++] = argv[i];
            continue;
        }
        if (id < 0) {
            usage_error("unknown flag %s", arg);
            return -1;
        }
        given[id] = arg;
        if (!cli_flags[id].takes_value && value != NULL) {
            usage_error("%s takes no value", cli_flags[id].name);
            return -1;
        }
        if (cli_flags[id].takes_value && value == NULL) {
            if (i + 1 >= argc) {
                usage_error("%s needs a value", arg);
                return -1;
            }
            value = argv[++i];
        }
        if (id == F_HELP)
            want = WANT_HELP;
        else if (id == F_VERSION && want != WANT_HELP)
            want = WANT_VERSION;
        else if (set_flag(o, (enum flag_id)id, value) != 0)
            return -1;
    }
    return want;
}

/* Rules that involve the command: arity, flags it does not take, and the
 * shape of its arguments. */
static int check_command(const struct cli_command *cmd, struct cli_opts *o,
                         const char **given)
{
    for (int id = 0; id < N_FLAGS; id++) {
        const char *only = cli_flags[id].only_for;
        if (given[id] != NULL && only != NULL && strcmp(only, cmd->name) != 0)
            return usage_error("%s is only valid with '%s'", given[id], only);
    }
    if (o->n_args < cmd->min_args || o->n_args > cmd->max_args) {
        fprintf(stderr,
                "raftkv-cli: %s: wrong number of arguments (%d), usage: "
                "raftkv-cli %s (see raftkv-cli --help)\n",
                cmd->name, o->n_args, cmd->usage);
        return CLI_EXIT_USAGE;
    }
    if (strcmp(cmd->name, "leader") == 0 && strcmp(o->args[0], "transfer") != 0)
        return usage_error("leader: unknown subcommand '%s', want "
                           "'leader transfer [NAME]'",
                           o->args[0]);
    if (strcmp(cmd->name, "cas") == 0) {
        if (cli_parse_u64(o->args[1], &o->cas) != 0)
            return usage_error("cas: bad MOD_INDEX '%s', want a number >= 0",
                               o->args[1]);
        o->have_cas = 1;
    }
    if (o->prefix != NULL && (o->start != NULL || o->end != NULL))
        return usage_error("list: --prefix cannot be combined with "
                           "--start/--end");
    if (o->prefix != NULL && o->prefix[0] == '\0')
        return usage_error("list: --prefix must not be empty");
    /* Keys and member names are never empty; an empty one would also
     * turn /v1/kv/KEY into a different route. */
    if (cmd->arg0 != NULL && o->args[0][0] == '\0')
        return usage_error("%s: %s must not be empty", cmd->name, cmd->arg0);
    if (strcmp(cmd->name, "leader") == 0 && o->n_args == 2 &&
        o->args[1][0] == '\0')
        return usage_error("leader transfer: NAME must not be empty");
    return CLI_EXIT_OK;
}

static int run_command(const struct cli_command *cmd, struct cli_opts *o)
{
    struct cli_client client = {0};
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fputs("raftkv-cli: cannot initialise libcurl\n", stderr);
        return CLI_EXIT_FAILED;
    }
    int rv = CLI_EXIT_FAILED;
    if (cli_client_init(&client, o) == 0)
        rv = cmd->run(&client, o);
    cli_client_free(&client);
    curl_global_cleanup();
    return rv;
}

static int main_inner(int argc, char **argv, struct cli_opts *o)
{
    const char *given[N_FLAGS] = {0};

    int want = parse_args(argc, argv, o, given);
    if (want < 0)
        return CLI_EXIT_USAGE;
    if (want == WANT_HELP ||
        (o->command != NULL && strcmp(o->command, "help") == 0)) {
        fputs(cli_help, stdout);
        return CLI_EXIT_OK;
    }
    if (want == WANT_VERSION) {
        printf("raftkv-cli %s (%s)\n", RAFTKV_VERSION, RAFTKV_GITREV);
        return CLI_EXIT_OK;
    }
    if (o->command == NULL)
        return usage_error("no command given");

    const struct cli_command *cmd = NULL;
    for (size_t i = 0; i < sizeof cli_commands / sizeof cli_commands[0]; i++) {
        if (strcmp(cli_commands[i].name, o->command) == 0)
            cmd = &cli_commands[i];
    }
    if (cmd == NULL)
        return usage_error("unknown command '%s'", o->command);
    int rv = check_command(cmd, o, given);
    if (rv != CLI_EXIT_OK)
        return rv;

    if (o->n_endpoints == 0) {
        const char *env = getenv("RAFTKV_ENDPOINTS");
        int from_env = env != NULL && env[0] != '\0';
        if (parse_endpoints(o, from_env ? env : CLI_DEFAULT_ENDPOINT,
                            "RAFTKV_ENDPOINTS") != 0)
            return CLI_EXIT_USAGE;
    }
    return run_command(cmd, o);
}

int main(int argc, char **argv)
{
    struct cli_opts o = {.timeout_ms = CLI_DEFAULT_TIMEOUT_MS};

    int rv = main_inner(argc, argv, &o);
    free_endpoints(&o);
    free(o.args);

    /* A full disk or closed pipe must not pass for success. */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "raftkv-cli: writing to stdout: %s\n", strerror(errno));
        if (rv == CLI_EXIT_OK)
            rv = CLI_EXIT_FAILED;
    }
    return rv;
}
