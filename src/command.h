/* command.h - the binary encoding of commands in the Raft log.
 *
 * One Raft entry carries one batch of commands, applied atomically in one
 * LMDB transaction.  Today a batch usually holds one client command; the
 * format allows several so that many pending writes can share one entry
 * (group commit) and so that a transaction is a single entry.
 *
 * Layout, all integers little-endian:
 *
 *   offset 0  u8   format version (COMMAND_VERSION)
 *          1  u8   flags, must be 0
 *          2  u16  number of commands, >= 1
 *          4  u32  payload length P (bytes after this 8-byte header)
 *          8  P bytes of commands, each: u8 type, then its fields
 *        8+P  zero padding up to a multiple of 8
 *
 * Fields are unsigned LEB128 varints (integers) and varint-length-prefixed
 * byte strings.  The padding is not cosmetic: libraft 0.15.0 loses committed
 * entries on restart when an entry's length is not a multiple of 8.
 *
 * Decoding never trusts the input: every length is checked against what is
 * left, unknown versions and types are rejected, keys must be 1 to
 * COMMAND_MAX_KEY bytes (what the store accepts: a committed entry that the
 * store would refuse must be skipped alike by every node, not stop them),
 * and strings point into the entry (no copies), so decoded commands live as
 * long as the buffer. */
#ifndef RAFTKV_COMMAND_H
#define RAFTKV_COMMAND_H

#include <stddef.h>
#include <stdint.h>

#define COMMAND_VERSION 1
#define COMMAND_HEADER_SIZE 8
#define COMMAND_MAX_COUNT 65535
#define COMMAND_MAX_KEY 65535 /* keys are 1 to this many bytes */
#define COMMAND_MAX_FIELD 1024 /* member names and addresses */

/* Error codes (negative). */
#define COMMAND_EMALFORMED (-1) /* truncated, bad length, trailing bytes */
#define COMMAND_EVERSION (-2)   /* unknown format version or flags */
#define COMMAND_ETYPE (-3)      /* unknown command type */
#define COMMAND_ENOMEM (-4)     /* allocation failed (encoding only) */

enum command_type {
    CMD_PUT = 1,        /* key, value: create or overwrite */
    CMD_DELETE = 2,     /* key: remove if present */
    CMD_INIT = 3,       /* cluster_id: first entry of a new cluster */
    CMD_MEMBER_PUT = 4, /* id, name, raft_addr, http_addr */
    CMD_MEMBER_DEL = 5, /* id */
    CMD_PUT_CAS = 6,    /* key, value, cas: put if mod_index == cas */
    CMD_DELETE_CAS = 7, /* key, cas: delete if mod_index == cas */
    CMD_TXN = 8,        /* compares, success ops, failure ops */
    CMD_NOOP = 9,       /* no fields, no effect: an entry that only
                         * confirms leadership for reads (readindex.c) */
};

/* A transaction (CMD_TXN), encoded as:
 *   varint n_compares, compares: u8 kind, key, then varint number (MOD_INDEX,
 *   VERSION) or bytes value (VALUE);
 *   varint n_success, ops; varint n_failure, ops: u8 kind, key, then bytes
 *   value for PUT. */
enum command_cmp_kind {
    CMP_MOD_INDEX = 1, /* key's mod_index == number (0: key absent) */
    CMP_VERSION = 2,   /* key's version == number (0: key absent) */
    CMP_VALUE = 3,     /* key exists and its value == value */
};

enum command_op_kind { OP_PUT = 1, OP_DELETE = 2, OP_GET = 3 };

struct command_bytes
{
    const uint8_t *base;
    size_t len;
};

struct command_compare
{
    enum command_cmp_kind kind;
    struct command_bytes key;
    uint64_t number;
    struct command_bytes value;
};

struct command_op
{
    enum command_op_kind kind;
    struct command_bytes key;
    struct command_bytes value; /* OP_PUT */
};

struct command_txn
{
    const struct command_compare *compares;
    unsigned n_compares;
    const struct command_op *success;
    unsigned n_success;
    const struct command_op *failure;
    unsigned n_failure;
};

struct command
{
    enum command_type type;
    struct command_bytes key;   /* PUT, DELETE */
    struct command_bytes value; /* PUT */
    uint64_t id;                /* INIT: cluster id; MEMBER_*: server id */
    struct command_bytes name;      /* MEMBER_PUT */
    struct command_bytes raft_addr; /* MEMBER_PUT */
    struct command_bytes http_addr; /* MEMBER_PUT, may be empty */
    uint64_t cas;                   /* PUT_CAS, DELETE_CAS */
    /* CMD_TXN.  Encoding reads @txn.  Decoding fills the counts and @txn_raw
     * (the validated encoded parts), read back with command_txn_reader. */
    const struct command_txn *txn;
    unsigned n_compares, n_success, n_failure;
    struct command_bytes txn_raw;
};

/* Reads a decoded CMD_TXN back: all n_compares compares, then the n_success
 * success ops, then the n_failure failure ops, strictly in that order (to
 * reach the failure ops, read past the success ops).  The decoder has
 * validated everything, so reading cannot fail. */
struct command_txn_reader
{
    const uint8_t *pos, *end;
    int list;      /* 0 compares, 1 success ops, 2 failure ops */
    unsigned left; /* items left in the current list */
};

void command_txn_reader_init(struct command_txn_reader *r,
                             const struct command *cmd);
void command_txn_next_compare(struct command_txn_reader *r,
                              struct command_compare *out);
void command_txn_next_op(struct command_txn_reader *r, struct command_op *out);

/* --- Encoding ---------------------------------------------------------- */

/* Bytes needed to encode @cmds (header, payload and padding). */
size_t command_encoded_size(const struct command *cmds, unsigned n);

/* Encode @n >= 1 commands into @buf of @cap bytes (see command_encoded_size).
 * Returns the number of bytes written (a multiple of 8), or
 * COMMAND_EMALFORMED if @cap is too small, @n is 0 or over
 * COMMAND_MAX_COUNT, or a type is unknown. */
long command_encode(const struct command *cmds, unsigned n, void *buf,
                    size_t cap);

/* Encode into a fresh raft_malloc'ed buffer, ready for raft_apply.  Returns
 * 0 and sets *base and *len, or a negative COMMAND_E* code. */
int command_encode_alloc(const struct command *cmds, unsigned n, void **base,
                         size_t *len);

/* One entry built from the commands of several requests (group commit):
 * add them as they come, then hand the entry to raft_apply. */
struct command_batch
{
    uint8_t *buf; /* raft_malloc'ed; the header's room first */
    size_t len, cap;
    unsigned count; /* commands so far */
};

void command_batch_init(struct command_batch *b);

/* Append @n commands.  Returns 0, COMMAND_EMALFORMED (bad command, or over
 * COMMAND_MAX_COUNT commands in all) or COMMAND_ENOMEM; on error the batch
 * is unchanged. */
int command_batch_add(struct command_batch *b, const struct command *cmds,
                      unsigned n);

/* Close the entry (header, padding) and hand over its raft_malloc'ed
 * buffer, cut to the entry's length; the batch is empty again.
 * COMMAND_EMALFORMED when empty. */
int command_batch_finish(struct command_batch *b, void **base, size_t *len);

/* Drop what was added. */
void command_batch_free(struct command_batch *b);

/* --- Decoding ---------------------------------------------------------- */

struct command_iter
{
    const uint8_t *pos, *end;
    unsigned remaining;
};

/* Check the header of entry @buf/@len and prepare to iterate its commands.
 * Returns the number of commands (>= 1), COMMAND_EVERSION, or
 * COMMAND_EMALFORMED (short buffer, length beyond the buffer, non-zero
 * padding, padding of 8 or more bytes, zero commands). */
int command_iter_init(struct command_iter *it, const void *buf, size_t len);

/* Decode the next command into @cmd.  Returns 1 when a command was decoded,
 * 0 at the end (all commands consumed exactly), COMMAND_EMALFORMED or
 * COMMAND_ETYPE. */
int command_iter_next(struct command_iter *it, struct command *cmd);

/* Decode and validate a whole entry without applying it: returns the number
 * of commands, or a negative COMMAND_E* code. */
int command_validate(const void *buf, size_t len);

const char *command_strerror(int code);

#endif
