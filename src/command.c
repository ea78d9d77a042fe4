/* command.c - encode and decode batches of commands for the Raft log.
 *
 * See command.h for the layout.  Varints keep the common case (short keys,
 * small values) compact without limiting sizes; fixed-width header fields let
 * a reader size and check the entry before touching its payload. */
#include "command.h"

#include <raft.h>
#include <string.h>

static size_t varint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *varint_put(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* Returns 0, or -1 when the varint is truncated or longer than 64 bits. */
static int varint_get(const uint8_t **pos, const uint8_t *end, uint64_t *out)
{
    uint64_t v = 0;
    unsigned shift = 0;
    const uint8_t *p = *pos;

    for (;;) {
        if (p == end || shift > 63)
            return -1;
        uint8_t b = *p++;
        if (shift == 63 && (b & 0x7e))
            return -1; /* would overflow 64 bits */
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            break;
        shift += 7;
    }
    *pos = p;
    *out = v;
    return 0;
}

static size_t bytes_size(struct command_bytes b)
{
    return varint_size(b.len) + b.len;
}

static uint8_t *bytes_put(uint8_t *p, struct command_bytes b)
{
    p = varint_put(p, b.len);
    if (b.len > 0)
        memcpy(p, b.base, b.len);
    return p + b.len;
}

static int bytes_get(const uint8_t **pos, const uint8_t *end,
                     struct command_bytes *out)
{
    uint64_t len;
    if (varint_get(pos, end, &len) != 0)
        return -1;
    if (len > (uint64_t)(end - *pos))
        return -1;
    out->base = *pos;
    out->len = (size_t)len;
    *pos += len;
    return 0;
}

/* Payload size of one command, or 0 for an unknown type. */
static size_t command_size(const struct command *c)
{
    switch (c->type) {
    case CMD_PUT:
        return 1 + bytes_size(c->key) + bytes_size(c->value);
    case CMD_DELETE:
        return 1 + bytes_size(c->key);
    case CMD_INIT:
    case CMD_MEMBER_DEL:
        return 1 + varint_size(c->id);
    case CMD_MEMBER_PUT:
        return 1 + varint_size(c->id) + bytes_size(c->name) +
               bytes_size(c->raft_addr) + bytes_size(c->http_addr);
    }
    return 0;
}

static size_t pad8(size_t n) { return (n + 7) & ~(size_t)7; }

size_t command_encoded_size(const struct command *cmds, unsigned n)
{
    size_t payload = 0;
    for (unsigned i = 0; i < n; i++)
        payload += command_size(&cmds[i]);
    return pad8(COMMAND_HEADER_SIZE + payload);
}

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

long command_encode(const struct command *cmds, unsigned n, void *buf,
                    size_t cap)
{
    size_t payload = 0;
    uint8_t *p;

    if (n == 0 || n > COMMAND_MAX_COUNT)
        return COMMAND_EMALFORMED;
    for (unsigned i = 0; i < n; i++) {
        size_t s = command_size(&cmds[i]);
        if (s == 0)
            return COMMAND_EMALFORMED;
        payload += s;
    }
    if (payload > UINT32_MAX || pad8(COMMAND_HEADER_SIZE + payload) > cap)
        return COMMAND_EMALFORMED;

    p = buf;
    p[0] = COMMAND_VERSION;
    p[1] = 0;
    put_u16(p + 2, (uint16_t)n);
    put_u32(p + 4, (uint32_t)payload);
    p += COMMAND_HEADER_SIZE;
    for (unsigned i = 0; i < n; i++) {
        const struct command *c = &cmds[i];
        *p++ = (uint8_t)c->type;
        switch (c->type) {
        case CMD_PUT:
            p = bytes_put(p, c->key);
            p = bytes_put(p, c->value);
            break;
        case CMD_DELETE:
            p = bytes_put(p, c->key);
            break;
        case CMD_INIT:
        case CMD_MEMBER_DEL:
            p = varint_put(p, c->id);
            break;
        case CMD_MEMBER_PUT:
            p = varint_put(p, c->id);
            p = bytes_put(p, c->name);
            p = bytes_put(p, c->raft_addr);
            p = bytes_put(p, c->http_addr);
            break;
        }
    }
    size_t used = (size_t)(p - (uint8_t *)buf);
    size_t total = pad8(used);
    memset(p, 0, total - used);
    return (long)total;
}

int command_encode_alloc(const struct command *cmds, unsigned n, void **base,
                         size_t *len)
{
    size_t size = command_encoded_size(cmds, n);
    void *buf = raft_malloc(size);
    long rv;

    if (buf == NULL)
        return COMMAND_ENOMEM;
    rv = command_encode(cmds, n, buf, size);
    if (rv < 0) {
        raft_free(buf);
        return (int)rv;
    }
    *base = buf;
    *len = (size_t)rv;
    return 0;
}

int command_iter_init(struct command_iter *it, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    uint32_t payload;
    unsigned count;

    if (len < COMMAND_HEADER_SIZE || len % 8 != 0)
        return COMMAND_EMALFORMED;
    if (p[0] != COMMAND_VERSION || p[1] != 0)
        return COMMAND_EVERSION;
    count = (unsigned)p[2] | (unsigned)p[3] << 8;
    payload = get_u32(p + 4);
    if (count == 0 || payload > len - COMMAND_HEADER_SIZE)
        return COMMAND_EMALFORMED;
    if (len != pad8(COMMAND_HEADER_SIZE + (size_t)payload))
        return COMMAND_EMALFORMED;
    for (size_t i = COMMAND_HEADER_SIZE + payload; i < len; i++)
        if (p[i] != 0)
            return COMMAND_EMALFORMED;
    it->pos = p + COMMAND_HEADER_SIZE;
    it->end = it->pos + payload;
    it->remaining = count;
    return (int)count;
}

int command_iter_next(struct command_iter *it, struct command *cmd)
{
    const uint8_t **p = &it->pos;

    if (it->remaining == 0)
        return it->pos == it->end ? 0 : COMMAND_EMALFORMED;
    if (*p == it->end)
        return COMMAND_EMALFORMED;
    memset(cmd, 0, sizeof *cmd);
    cmd->type = (enum command_type) * (*p)++;
    switch (cmd->type) {
    case CMD_PUT:
        if (bytes_get(p, it->end, &cmd->key) != 0 ||
            bytes_get(p, it->end, &cmd->value) != 0)
            return COMMAND_EMALFORMED;
        break;
    case CMD_DELETE:
        if (bytes_get(p, it->end, &cmd->key) != 0)
            return COMMAND_EMALFORMED;
        break;
    case CMD_INIT:
    case CMD_MEMBER_DEL:
        if (varint_get(p, it->end, &cmd->id) != 0)
            return COMMAND_EMALFORMED;
        break;
    case CMD_MEMBER_PUT:
        if (varint_get(p, it->end, &cmd->id) != 0 ||
            bytes_get(p, it->end, &cmd->name) != 0 ||
            bytes_get(p, it->end, &cmd->raft_addr) != 0 ||
            bytes_get(p, it->end, &cmd->http_addr) != 0)
            return COMMAND_EMALFORMED;
        break;
    default:
        return COMMAND_ETYPE;
    }
    it->remaining--;
    if (it->remaining == 0 && it->pos != it->end)
        return COMMAND_EMALFORMED; /* trailing bytes after the last command */
    return 1;
}

int command_validate(const void *buf, size_t len)
{
    struct command_iter it;
    struct command cmd;
    int n = command_iter_init(&it, buf, len);
    int rv;

    if (n < 0)
        return n;
    while ((rv = command_iter_next(&it, &cmd)) == 1)
        ;
    return rv < 0 ? rv : n;
}

const char *command_strerror(int code)
{
    switch (code) {
    case COMMAND_EMALFORMED:
        return "malformed command entry";
    case COMMAND_EVERSION:
        return "unknown command format version";
    case COMMAND_ETYPE:
        return "unknown command type";
    case COMMAND_ENOMEM:
        return "out of memory";
    }
    return "unknown error";
}
