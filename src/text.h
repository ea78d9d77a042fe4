/* text.h - small text codecs the API needs: base64 (values in JSON,
 * continuation tokens), UTF-8 validation (keys must be text), and the few
 * bits of JSON and decimal output that the hot paths write by hand rather
 * than through jansson and snprintf (a fifth of a PUT's user time). */
#ifndef RAFTKV_TEXT_H
#define RAFTKV_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bytes needed by text_base64_encode for @len input bytes (with NUL). */
size_t text_base64_size(size_t len);

/* Encode @in into @out (standard alphabet with padding, or the URL-safe one
 * without padding when @url); NUL-terminates; returns the length. */
size_t text_base64_encode(const void *in, size_t len, char *out, bool url);

/* Decode standard or URL-safe base64 (padding optional) into @out, which
 * needs at least len * 3 / 4 + 3 bytes.  Returns the decoded length, or -1
 * on a character outside both alphabets or a bad length. */
long text_base64_decode(const char *in, size_t len, void *out);

/* Is @s[0..len) valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF)? */
bool text_utf8_valid(const void *s, size_t len);

/* Room text_u64 needs: 20 digits and the NUL. */
#define TEXT_U64_SIZE 21

/* Write @v in decimal into @out (TEXT_U64_SIZE bytes); NUL-terminates;
 * returns the length. */
size_t text_u64(uint64_t v, char *out);

/* Room text_json_quote needs for @len input bytes: every byte may become a
 * six-byte \u00XX, plus the quotes and the NUL. */
static inline size_t text_json_quote_size(size_t len) { return len * 6 + 3; }

/* Write @s as a JSON string, quotes included, into @out: '"', '\\' and
 * control characters are escaped as jansson does, every other byte is copied
 * (the caller has checked that @s is UTF-8).  NUL-terminates; returns the
 * length. */
size_t text_json_quote(const void *s, size_t len, char *out);

#endif
