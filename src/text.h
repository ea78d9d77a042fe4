/* text.h - small text codecs the API needs: base64 (values in JSON,
 * continuation tokens) and UTF-8 validation (keys must be text). */
#ifndef RAFTKV_TEXT_H
#define RAFTKV_TEXT_H

#include <stdbool.h>
#include <stddef.h>

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

#endif
