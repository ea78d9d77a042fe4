/* http.c - how raftkv-cli reaches the cluster.
 *
 * Any node serves any request (followers forward to the leader), so the
 * client only needs one node that answers.  It tries the endpoints in the
 * order given: a connection failure, a timeout or a 503 moves on to the next
 * one, and the list is walked at most twice (at least 4 attempts, so a
 * single endpoint rides out a leader election).  A 503's Retry-After is
 * honoured per endpoint, capped, so a busy node is not hammered while the
 * others are tried at once.  307 redirects (the server's `?redirect` mode,
 * or a proxy) are followed by libcurl.  Any other answer, success or
 * error, is final: the caller decides what it means. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

#ifndef RAFTKV_VERSION
#define RAFTKV_VERSION "0.0.0"
#endif

#define CLI_MIN_ATTEMPTS 4
#define CLI_MAX_REDIRECTS 3
#define CLI_CONNECT_TIMEOUT_MS 5000L /* a dead host must not eat --timeout */
#define CLI_RETRY_AFTER_CAP_MS 5000L
#define CLI_RETRY_AFTER_DEFAULT_MS 1000L
#define CLI_FAILED_BACKOFF_MS 200L /* before reusing a failed endpoint */

int cli_client_init(struct cli_client *c, const struct cli_opts *o)
{
    c->opts = o;
    c->curl = curl_easy_init();
    if (c->curl == NULL) {
        fputs("raftkv-cli: cannot initialise libcurl\n", stderr);
        return -1;
    }
    return 0;
}

void cli_client_free(struct cli_client *c)
{
    if (c->curl != NULL)
        curl_easy_cleanup(c->curl);
    c->curl = NULL;
}

void cli_response_free(struct cli_response *r)
{
    cli_buf_free(&r->body);
    if (r->json != NULL)
        json_decref(r->json);
    r->json = NULL;
    r->json_tried = 0;
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_until(long when_ms)
{
    long left = when_ms - now_ms();
    if (left <= 0)
        return;
    struct timespec ts = {.tv_sec = left / 1000,
                          .tv_nsec = (left % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0)
        ; /* EINTR: sleep the rest */
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    cli_buf_add(arg, data, size * n);
    return size * n;
}

/* Only the delay-seconds form: the server sends "1".  An HTTP date (or
 * garbage) falls back to the default. */
static long retry_after_ms(CURL *h)
{
    struct curl_header *hdr = NULL;
    if (curl_easy_header(h, "Retry-After", 0, CURLH_HEADER, -1, &hdr) !=
        CURLHE_OK)
        return CLI_RETRY_AFTER_DEFAULT_MS;
    uint64_t secs;
    if (cli_parse_u64(hdr->value, &secs) != 0)
        return CLI_RETRY_AFTER_DEFAULT_MS;
    if (secs * 1000 > (uint64_t)CLI_RETRY_AFTER_CAP_MS)
        return CLI_RETRY_AFTER_CAP_MS;
    return (long)secs * 1000;
}

/* One HTTP exchange with one endpoint.  Returns libcurl's result; on
 * CURLE_OK, resp holds the status and body. */
static CURLcode attempt(struct cli_client *c, const char *endpoint,
                        const struct cli_request *req,
                        struct cli_response *resp, char *errbuf)
{
    CURL *h = c->curl;
    struct cli_buf url = {0};
    struct curl_slist *headers = NULL;
    long timeout = c->opts->timeout_ms;
    long connect_timeout =
        timeout < CLI_CONNECT_TIMEOUT_MS ? timeout : CLI_CONNECT_TIMEOUT_MS;

    if (strstr(endpoint, "://") == NULL)
        cli_buf_adds(&url, "http://");
    cli_buf_adds(&url, endpoint);
    cli_buf_adds(&url, req->path);

    cli_response_free(resp);
    cli_buf_add(&resp->body, "", 0);
    resp->status = 0;
    errbuf[0] = '\0';

    /* The server answers 417 to Expect: 100-continue, and waiting for a
     * go-ahead only adds a round trip. */
    headers = curl_slist_append(headers, "Expect:");
    if (req->body != NULL && req->content_type != NULL) {
        char line[128];
        snprintf(line, sizeof line, "Content-Type: %s", req->content_type);
        headers = curl_slist_append(headers, line);
    }

    curl_easy_reset(h); /* keeps the connection cache */
    curl_easy_setopt(h, CURLOPT_URL, url.data);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, connect_timeout);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(h, CURLOPT_MAXREDIRS, (long)CLI_MAX_REDIRECTS);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "raftkv-cli/" RAFTKV_VERSION);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &resp->body);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    if (req->body != NULL) {
        /* POSTFIELDS (not a read callback) so a 307 can resend the body. */
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t)req->body_len);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, req->body);
    }
    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "POST") != 0)
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req->method);

    CURLcode rc = curl_easy_perform(h);
    if (rc == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status);
    if (rc != CURLE_OK && errbuf[0] == '\0')
        snprintf(errbuf, CURL_ERROR_SIZE, "%s", curl_easy_strerror(rc));

    /* The handle must not keep pointers into memory freed here. */
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
    curl_slist_free_all(headers);
    cli_buf_free(&url);
    return rc;
}

/* Did the failed exchange send anything?  If not, a retried write cannot
 * be applied twice. */
static int request_sent(CURL *h)
{
    long sent = 0;
    curl_easy_getinfo(h, CURLINFO_REQUEST_SIZE, &sent);
    return sent > 0;
}

static void note_503(struct cli_response *resp, char *out, size_t n)
{
    json_t *doc = cli_response_json(resp);
    json_t *err = doc ? json_object_get(doc, "error") : NULL;
    snprintf(out, n, "HTTP 503: %s",
             json_is_string(err) ? json_string_value(err) : "unavailable");
}

/* The reasons end up in one error line: no line breaks from the server. */
static void flatten(char *s)
{
    for (; *s; s++) {
        if ((unsigned char)*s < 0x20)
            *s = ' ';
    }
}

static void report_exhausted(const struct cli_opts *o,
                             const struct cli_request *req, char **why,
                             int attempts, int maybe_applied)
{
    int plen = (int)strlen(req->path);
    fprintf(stderr,
            "raftkv-cli: %s %.*s%s: no endpoint could serve it after "
            "%d attempts:",
            req->method, plen > 80 ? 80 : plen, req->path,
            plen > 80 ? "..." : "", attempts);
    for (size_t i = 0; i < o->n_endpoints; i++) {
        if (why[i][0] == '\0')
            continue;
        fprintf(stderr, "%s %s: %s", i ? ";" : "", o->endpoints[i], why[i]);
    }
    if (maybe_applied)
        fputs("; the write may or may not have been applied", stderr);
    fputc('\n', stderr);
}

int cli_http_do(struct cli_client *c, const struct cli_request *req,
                struct cli_response *resp)
{
    const struct cli_opts *o = c->opts;
    size_t n = o->n_endpoints;
    int attempts = (int)(2 * n);
    char errbuf[CURL_ERROR_SIZE];

    if (n == 0) { /* main.c always sets one; this keeps % n safe */
        fputs("raftkv-cli: no endpoints\n", stderr);
        return CLI_EXIT_USAGE;
    }
    long *retry_at = cli_xrealloc(NULL, n * sizeof *retry_at);
    char **why = cli_xrealloc(NULL, n * sizeof *why);
    int maybe_applied = 0;
    int rv = CLI_EXIT_UNAVAILABLE;

    if (attempts < CLI_MIN_ATTEMPTS)
        attempts = CLI_MIN_ATTEMPTS;
    for (size_t i = 0; i < n; i++) {
        retry_at[i] = 0;
        why[i] = cli_xrealloc(NULL, CURL_ERROR_SIZE + 64);
        why[i][0] = '\0';
    }

    for (int i = 0; i < attempts; i++) {
        size_t e = (size_t)i % n;
        sleep_until(retry_at[e]);
        CURLcode rc = attempt(c, o->endpoints[e], req, resp, errbuf);
        if (rc != CURLE_OK) {
            snprintf(why[e], CURL_ERROR_SIZE + 64, "%s", errbuf);
            flatten(why[e]);
            if (req->write && request_sent(c->curl))
                maybe_applied = 1;
            retry_at[e] = now_ms() + CLI_FAILED_BACKOFF_MS;
            continue;
        }
        if (resp->status == 503) {
            /* The spec: a 503 to a write leaves its outcome unknown. */
            note_503(resp, why[e], CURL_ERROR_SIZE + 64);
            flatten(why[e]);
            if (req->write)
                maybe_applied = 1;
            retry_at[e] = now_ms() + retry_after_ms(c->curl);
            continue;
        }
        resp->endpoint = o->endpoints[e];
        resp->maybe_applied = maybe_applied;
        rv = CLI_EXIT_OK;
        break;
    }
    if (rv != CLI_EXIT_OK)
        report_exhausted(o, req, why, attempts, maybe_applied);

    for (size_t i = 0; i < n; i++)
        free(why[i]);
    free(why);
    free(retry_at);
    return rv;
}
