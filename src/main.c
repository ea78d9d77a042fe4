/* main.c - flags -> node -> loop.
 *
 * One libuv loop runs everything: Raft (libraft's disk I/O and transport),
 * the HTTP server and outbound HTTP.  libraft is not thread-safe, so there
 * is no other thread that could touch it. */
#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "api.h"
#include "config.h"
#include "http.h"
#include "log.h"
#include "node.h"

#ifndef RAFTKV_VERSION
#define RAFTKV_VERSION "0.0.0"
#endif
#ifndef RAFTKV_GITREV
#define RAFTKV_GITREV "unknown"
#endif

#define MAX_HEADER_BYTES (64 * 1024)

struct server
{
    uv_loop_t loop;
    struct config cfg;
    struct node node;
    struct api api;
    struct http_server *http;
    uv_signal_t sigint, sigterm;
    bool stopping;
};

/* Resolve @host to an IPv4 literal (libraft's transport takes only those).
 * Runs once at start, before the loop, so blocking is fine. */
static int resolve_ipv4(const char *flag, const char *host, char *out,
                        size_t len)
{
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rv = getaddrinfo(host, NULL, &hints, &res);
    if (rv != 0 || res == NULL) {
        fprintf(stderr, "raftkv: %s: cannot resolve '%s' to an IPv4 address: "
                        "%s\n",
                flag, host, gai_strerror(rv));
        return -1;
    }
    inet_ntop(AF_INET, &((struct sockaddr_in *)res->ai_addr)->sin_addr, out,
              (socklen_t)len);
    freeaddrinfo(res);
    return 0;
}

/* libraft reports a taken Raft port only as "I/O error": try the bind here
 * first so that the operator reads the cause. */
static int check_port_free(const char *flag, const char *ip, int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1, rv = 0;

    if (fd < 0)
        return 0; /* let the real listener report it */
    inet_pton(AF_INET, ip, &sa.sin_addr);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        fprintf(stderr, "raftkv: %s: cannot listen on %s:%d: %s\n", flag, ip,
                port, strerror(errno));
        rv = -1;
    }
    close(fd);
    return rv;
}

static void on_signal_closed(uv_handle_t *h) { (void)h; }

static void on_node_stopped(struct node *n)
{
    struct server *s = (struct server *)((char *)n - offsetof(struct server,
                                                               node));
    uv_close((uv_handle_t *)&s->sigint, on_signal_closed);
    uv_close((uv_handle_t *)&s->sigterm, on_signal_closed);
    log_info("stopped");
}

static void on_http_stopped(void *arg)
{
    struct server *s = arg;
    s->http = NULL;
    node_stop(&s->node, on_node_stopped);
}

static void on_signal(uv_signal_t *sig, int signum)
{
    struct server *s = sig->data;
    if (s->stopping)
        return;
    s->stopping = true;
    log_info("%s: shutting down", signum == SIGINT ? "SIGINT" : "SIGTERM");
    /* HTTP first: no new requests, and pending ones are released before
     * Raft fails their writes. */
    http_stop(s->http, on_http_stopped, s);
}

int main(int argc, char **argv)
{
    static struct server s; /* large; keep it off the stack */
    char err[512], raft_ip[INET_ADDRSTRLEN], http_ip[INET_ADDRSTRLEN];
    char raft_addr[NODE_ADDR_MAX], http_addr[NODE_ADDR_MAX];
    struct http_options opts;
    int rv;

    if (config_parse(&s.cfg, argc, argv, err, sizeof err) != 0) {
        fprintf(stderr, "raftkv: %s\n", err);
        return 2;
    }
    if (s.cfg.help) {
        config_usage(stdout);
        return 0;
    }
    if (s.cfg.version) {
        printf("raftkv %s (%s)\n", RAFTKV_VERSION, RAFTKV_GITREV);
        return 0;
    }
    if (resolve_ipv4("--raft-addr", s.cfg.raft_host, raft_ip,
                     sizeof raft_ip) != 0 ||
        resolve_ipv4("--http-addr", s.cfg.http_host, http_ip,
                     sizeof http_ip) != 0)
        return 2;
    snprintf(raft_addr, sizeof raft_addr, "%s:%d", raft_ip, s.cfg.raft_port);
    snprintf(http_addr, sizeof http_addr, "%s:%d", http_ip, s.cfg.http_port);

    if (check_port_free("--raft-port", raft_ip, s.cfg.raft_port) != 0 ||
        check_port_free("--http-port", http_ip, s.cfg.http_port) != 0)
        return 1;

    log_set_node(s.cfg.node_id);
    log_set_level(s.cfg.log_level);
    /* A peer that dies mid-write must not kill us with SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    /* Big buffers come and go: snapshots sent to followers, loaded
     * snapshot files.  glibc raises its mmap threshold after the first such
     * free and then keeps later ones in the heap, where freed holes stay
     * resident: 145 MiB after one snapshot of 1M keys.  A fixed threshold
     * hands every block of 4 MiB or more back to the system when it is freed
     * (node_trim_when_quiet trims the rest of the heap once writes stop).
     *
     * Not lower: every applied entry is an LMDB child transaction, which
     * allocates 3 MiB of page lists (2 + 1 MiB) and frees them at commit.
     * Served by mmap, that is four syscalls, page faults and TLB shootdowns
     * per entry; from the heap it is the same memory every time.  Writes at
     * 64 connections went up 10-30% (bench/README.md).  The trim threshold
     * keeps glibc from shrinking the heap under those lists each time. */
    mallopt(M_MMAP_THRESHOLD, 4 << 20);
    mallopt(M_TRIM_THRESHOLD, 16 << 20);

    uv_loop_init(&s.loop);
    if (node_start(&s.node, &s.loop, &s.cfg, raft_addr, http_addr) != 0)
        return 1;
    if (api_init(&s.api, &s.node, &s.cfg) != 0) {
        log_error("out of memory");
        return 1;
    }
    opts = (struct http_options){.host = http_ip,
                                 .port = s.cfg.http_port,
                                 .max_body = s.cfg.max_body_size,
                                 .max_header_bytes = MAX_HEADER_BYTES};
    rv = http_start(&s.http, &s.loop, &opts, api_handle, &s.api);
    if (rv != 0) {
        log_error("cannot listen for HTTP on %s: %s", http_addr,
                  uv_strerror(rv));
        return 1;
    }
    http_set_observer(s.http, api_observe, &s.api);
    uv_signal_init(&s.loop, &s.sigint);
    uv_signal_init(&s.loop, &s.sigterm);
    s.sigint.data = s.sigterm.data = &s;
    uv_signal_start(&s.sigint, on_signal, SIGINT);
    uv_signal_start(&s.sigterm, on_signal, SIGTERM);
    log_info("raftkv %s: node %s, raft %s, http %s, data %s", RAFTKV_VERSION,
             s.cfg.node_id, raft_addr, http_addr, s.cfg.data_dir);

    uv_run(&s.loop, UV_RUN_DEFAULT);
    node_destroy(&s.node);
    api_close(&s.api);
    rv = uv_loop_close(&s.loop);
    if (rv != 0) {
        log_error("loop closed with handles still open: %s", uv_strerror(rv));
        return 1;
    }
    return 0;
}
