/* command.c - encode and decode batches of commands for the Raft log.
 *
 * See command.h for the layout.  Varints keep the common case (short keys,
 * small values) compact without limiting sizes; fixed-width header fields let
 * a reader size and check the entry before touching its payload. */
#include "command.h"

#include <raft.h>
#include <stdbool.h>
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

/* A key as the store takes it: 1 to 65535 bytes. */
static int key_get(const uint8_t **pos, const uint8_t *end,
                   struct command_bytes *out);

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

static size_t op_size(const struct command_op *op)
{
    return 1 + bytes_size(op->key) +
           (op->kind == OP_PUT ? bytes_size(op->value) : 0);
}

static size_t txn_size(const struct command_txn *t)
{
    size_t n = varint_size(t->n_compares) + varint_size(t->n_success) +
               varint_size(t->n_failure);
    for (unsigned i = 0; i < t->n_compares; i++) {
        const struct command_compare *cmp = &t->compares[i];
        n += 1 + bytes_size(cmp->key) +
             (cmp->kind == CMP_VALUE ? bytes_size(cmp->value)
                                     : varint_size(cmp->number));
    }
    for (unsigned i = 0; i < t->n_success; i++)
        n += op_size(&t->success[i]);
    for (unsigned i = 0; i < t->n_failure; i++)
        n += op_size(&t->failure[i]);
    return n;
}

static int key_get(const uint8_t **pos, const uint8_t *end,
                   struct command_bytes *out)
{
    if (bytes_get(pos, end, out) != 0 || out->len == 0 ||
        out->len > COMMAND_MAX_KEY)
        return -1;
    return 0;
}

/* Payload size of one command, or 0 for an unknown type. */
static size_t command_size(const struct command *c)
{
    switch (c->type) {
    case CMD_PUT_CAS:
        return 1 + bytes_size(c->key) + bytes_size(c->value) +
               varint_size(c->cas);
    case CMD_DELETE_CAS:
        return 1 + bytes_size(c->key) + varint_size(c->cas);
    case CMD_TXN:
        return c->txn == NULL ? 0 : 1 + txn_size(c->txn);
    case CMD_PUT:
        return 1 + bytes_size(c->key) + bytes_size(c->value);
    case CMD_DELETE:
        return 1 + bytes_size(c->key);
    case CMD_NOOP:
        return 1;
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

static uint8_t *op_put(uint8_t *p, const struct command_op *op)
{
    *p++ = (uint8_t)op->kind;
    p = bytes_put(p, op->key);
    if (op->kind == OP_PUT)
        p = bytes_put(p, op->value);
    return p;
}

static uint8_t *txn_put(uint8_t *p, const struct command_txn *t)
{
    p = varint_put(p, t->n_compares);
    for (unsigned i = 0; i < t->n_compares; i++) {
        const struct command_compare *cmp = &t->compares[i];
        *p++ = (uint8_t)cmp->kind;
        p = bytes_put(p, cmp->key);
        p = cmp->kind == CMP_VALUE ? bytes_put(p, cmp->value)
                                   : varint_put(p, cmp->number);
    }
    p = varint_put(p, t->n_success);
    for (unsigned i = 0; i < t->n_success; i++)
        p = op_put(p, &t->success[i]);
    p = varint_put(p, t->n_failure);
    for (unsigned i = 0; i < t->n_failure; i++)
        p = op_put(p, &t->failure[i]);
    return p;
}

static bool txn_kinds_valid(const struct command_txn *t)
{
    for (unsigned i = 0; i < t->n_compares; i++)
        if (t->compares[i].kind < CMP_MOD_INDEX ||
            t->compares[i].kind > CMP_VALUE)
            return false;
    for (unsigned i = 0; i < t->n_success; i++)
        if (t->success[i].kind < OP_PUT || t->success[i].kind > OP_GET)
            return false;
    for (unsigned i = 0; i < t->n_failure; i++)
        if (t->failure[i].kind < OP_PUT || t->failure[i].kind > OP_GET)
            return false;
    return true;
}

/* Check @cmds and add up their payload size; 0 or COMMAND_EMALFORMED. */
static int payload_size(const struct command *cmds, unsigned n, size_t *out)
{
    size_t payload = 0;
    for (unsigned i = 0; i < n; i++) {
        size_t sz = command_size(&cmds[i]);
        if (sz == 0)
            return COMMAND_EMALFORMED;
        if (cmds[i].type == CMD_TXN && !txn_kinds_valid(cmds[i].txn))
            return COMMAND_EMALFORMED;
        payload += sz;
    }
    *out = payload;
    return 0;
}

static uint8_t *payload_put(uint8_t *p, const struct command *cmds,
                            unsigned n)
{
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
        case CMD_PUT_CAS:
            p = bytes_put(p, c->key);
            p = bytes_put(p, c->value);
            p = varint_put(p, c->cas);
            break;
        case CMD_DELETE_CAS:
            p = bytes_put(p, c->key);
            p = varint_put(p, c->cas);
            break;
        case CMD_TXN:
            p = txn_put(p, c->txn);
            break;
        case CMD_NOOP:
            break;
        }
    }
    return p;
}

/* Header in front, zeros behind: the entry is complete. */
static size_t entry_close(uint8_t *buf, unsigned count, size_t payload)
{
    size_t used = COMMAND_HEADER_SIZE + payload, total = pad8(used);
    buf[0] = COMMAND_VERSION;
    buf[1] = 0;
    put_u16(buf + 2, (uint16_t)count);
    put_u32(buf + 4, (uint32_t)payload);
    memset(buf + used, 0, total - used);
    return total;
}

long command_encode(const struct command *cmds, unsigned n, void *buf,
                    size_t cap)
{
    size_t payload;

    if (n == 0 || n > COMMAND_MAX_COUNT)
        return COMMAND_EMALFORMED;
    if (payload_size(cmds, n, &payload) != 0)
        return COMMAND_EMALFORMED;
    if (payload > UINT32_MAX || pad8(COMMAND_HEADER_SIZE + payload) > cap)
        return COMMAND_EMALFORMED;
    payload_put((uint8_t *)buf + COMMAND_HEADER_SIZE, cmds, n);
    return (long)entry_close(buf, n, payload);
}

void command_batch_init(struct command_batch *b)
{
    b->buf = NULL;
    b->len = b->cap = 0;
    b->count = 0;
}

int command_batch_add(struct command_batch *b, const struct command *cmds,
                      unsigned n)
{
    size_t payload, need;

    if (n == 0 || b->count + n > COMMAND_MAX_COUNT)
        return COMMAND_EMALFORMED;
    if (payload_size(cmds, n, &payload) != 0)
        return COMMAND_EMALFORMED;
    if (b->buf == NULL)
        b->len = COMMAND_HEADER_SIZE; /* room for the header */
    need = pad8(b->len + payload);
    if (need - COMMAND_HEADER_SIZE > UINT32_MAX)
        return COMMAND_EMALFORMED;
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < need)
            cap *= 2;
        uint8_t *grown = raft_realloc(b->buf, cap);
        if (grown == NULL)
            return COMMAND_ENOMEM;
        b->buf = grown;
        b->cap = cap;
    }
    payload_put(b->buf + b->len, cmds, n);
    b->len += payload;
    b->count += n;
    return 0;
}

int command_batch_finish(struct command_batch *b, void **base, size_t *len)
{
    if (b->count == 0)
        return COMMAND_EMALFORMED;
    *len = entry_close(b->buf, b->count, b->len - COMMAND_HEADER_SIZE);
    /* The buffer grew by doubling, so up to half of it is unused, and
     * libraft keeps the entry in memory until a snapshot passes it: the
     * log's share of the heap was up to twice its size.  Shrinking in place
     * is a split of the block, not a copy. */
    if (*len < b->cap) {
        uint8_t *fit = raft_realloc(b->buf, *len);
        if (fit != NULL)
            b->buf = fit;
    }
    *base = b->buf;
    command_batch_init(b);
    return 0;
}

void command_batch_free(struct command_batch *b)
{
    raft_free(b->buf);
    command_batch_init(b);
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

static int op_get(const uint8_t **p, const uint8_t *end,
                  struct command_op *op)
{
    if (*p == end)
        return -1;
    op->kind = (enum command_op_kind) * (*p)++;
    if (op->kind < OP_PUT || op->kind > OP_GET)
        return -1;
    if (key_get(p, end, &op->key) != 0)
        return -1;
    op->value.base = NULL;
    op->value.len = 0;
    if (op->kind == OP_PUT && bytes_get(p, end, &op->value) != 0)
        return -1;
    return 0;
}

static int compare_get(const uint8_t **p, const uint8_t *end,
                       struct command_compare *cmp)
{
    if (*p == end)
        return -1;
    cmp->kind = (enum command_cmp_kind) * (*p)++;
    if (cmp->kind < CMP_MOD_INDEX || cmp->kind > CMP_VALUE)
        return -1;
    if (key_get(p, end, &cmp->key) != 0)
        return -1;
    cmp->number = 0;
    cmp->value.base = NULL;
    cmp->value.len = 0;
    if (cmp->kind == CMP_VALUE)
        return bytes_get(p, end, &cmp->value);
    return varint_get(p, end, &cmp->number);
}

/* Read a count that cannot exceed the bytes left (each item takes >= 2). */
static int count_get(const uint8_t **p, const uint8_t *end, unsigned *out)
{
    uint64_t n;
    if (varint_get(p, end, &n) != 0 || n > (uint64_t)(end - *p) / 2)
        return -1;
    *out = (unsigned)n;
    return 0;
}

/* Validate a whole CMD_TXN body in place and record its span. */
static int txn_get(const uint8_t **p, const uint8_t *end, struct command *cmd)
{
    struct command_compare cmp;
    struct command_op op;
    const uint8_t *start = *p;

    if (count_get(p, end, &cmd->n_compares) != 0)
        return -1;
    for (unsigned i = 0; i < cmd->n_compares; i++)
        if (compare_get(p, end, &cmp) != 0)
            return -1;
    if (count_get(p, end, &cmd->n_success) != 0)
        return -1;
    for (unsigned i = 0; i < cmd->n_success; i++)
        if (op_get(p, end, &op) != 0)
            return -1;
    if (count_get(p, end, &cmd->n_failure) != 0)
        return -1;
    for (unsigned i = 0; i < cmd->n_failure; i++)
        if (op_get(p, end, &op) != 0)
            return -1;
    cmd->txn_raw.base = start;
    cmd->txn_raw.len = (size_t)(*p - start);
    return 0;
}

void command_txn_reader_init(struct command_txn_reader *r,
                             const struct command *cmd)
{
    uint64_t n = 0;
    r->pos = cmd->txn_raw.base;
    r->end = cmd->txn_raw.base + cmd->txn_raw.len;
    varint_get(&r->pos, r->end, &n);
    r->list = 0;
    r->left = (unsigned)n;
}

void command_txn_next_compare(struct command_txn_reader *r,
                              struct command_compare *out)
{
    compare_get(&r->pos, r->end, out);
    r->left--;
}

void command_txn_next_op(struct command_txn_reader *r, struct command_op *out)
{
    /* Step over the count that opens the next list. */
    while (r->left == 0 && r->list < 2) {
        uint64_t n = 0;
        varint_get(&r->pos, r->end, &n);
        r->list++;
        r->left = (unsigned)n;
    }
    op_get(&r->pos, r->end, out);
    r->left--;
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
        if (key_get(p, it->end, &cmd->key) != 0 ||
            bytes_get(p, it->end, &cmd->value) != 0)
            return COMMAND_EMALFORMED;
        break;
    case CMD_DELETE:
        if (key_get(p, it->end, &cmd->key) != 0)
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
            bytes_get(p, it->end, &cmd->http_addr) != 0 ||
            cmd->name.len > COMMAND_MAX_FIELD ||
            cmd->raft_addr.len > COMMAND_MAX_FIELD ||
            cmd->http_addr.len > COMMAND_MAX_FIELD)
            return COMMAND_EMALFORMED;
        break;
    case CMD_PUT_CAS:
        if (key_get(p, it->end, &cmd->key) != 0 ||
            bytes_get(p, it->end, &cmd->value) != 0 ||
            varint_get(p, it->end, &cmd->cas) != 0)
            return COMMAND_EMALFORMED;
        break;
    case CMD_DELETE_CAS:
        if (key_get(p, it->end, &cmd->key) != 0 ||
            varint_get(p, it->end, &cmd->cas) != 0)
            return COMMAND_EMALFORMED;
        break;
    case CMD_TXN:
        if (txn_get(p, it->end, cmd) != 0)
            return COMMAND_EMALFORMED;
        break;
    case CMD_NOOP:
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
