/* text.c - base64, UTF-8 checks, JSON strings and decimals; see text.h. */
#include "text.h"

#include <stdint.h>

static const char b64_std[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t text_base64_size(size_t len) { return (len + 2) / 3 * 4 + 1; }

size_t text_base64_encode(const void *in, size_t len, char *out, bool url)
{
    const uint8_t *p = in;
    const char *abc = url ? b64_url : b64_std;
    size_t o = 0, i = 0;

    for (; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = abc[v >> 18];
        out[o++] = abc[(v >> 12) & 63];
        out[o++] = abc[(v >> 6) & 63];
        out[o++] = abc[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)p[i + 1] << 8;
        out[o++] = abc[v >> 18];
        out[o++] = abc[(v >> 12) & 63];
        if (i + 1 < len)
            out[o++] = abc[(v >> 6) & 63];
        else if (!url)
            out[o++] = '=';
        if (!url)
            out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

long text_base64_decode(const char *in, size_t len, void *out)
{
    uint8_t *o = out;
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t n = 0;

    while (len > 0 && in[len - 1] == '=')
        len--;
    if (len % 4 == 1)
        return -1;
    for (size_t i = 0; i < len; i++) {
        int v = b64_value(in[i]);
        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            o[n++] = (uint8_t)(acc >> bits);
        }
    }
    return (long)n;
}

bool text_utf8_valid(const void *s, size_t len)
{
    const uint8_t *p = s, *end = p + len;

    while (p < end) {
        uint8_t c = *p++;
        unsigned need;
        uint32_t cp, min;

        if (c < 0x80)
            continue;
        if ((c & 0xe0) == 0xc0)
            need = 1, cp = c & 0x1f, min = 0x80;
        else if ((c & 0xf0) == 0xe0)
            need = 2, cp = c & 0x0f, min = 0x800;
        else if ((c & 0xf8) == 0xf0)
            need = 3, cp = c & 0x07, min = 0x10000;
        else
            return false;
        if ((size_t)(end - p) < need)
            return false;
        for (unsigned k = 0; k < need; k++) {
            if ((p[k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (p[k] & 0x3f);
        }
        p += need;
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
    }
    return true;
}

size_t text_u64(uint64_t v, char *out)
{
    char tmp[TEXT_U64_SIZE];
    size_t n = 0, len;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    len = n;
    for (size_t i = 0; i < len; i++)
        out[i] = tmp[--n];
    out[len] = '\0';
    return len;
}

size_t text_json_quote(const void *s, size_t len, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    const uint8_t *p = s;
    size_t o = 0;

    out[o++] = '"';
    for (size_t i = 0; i < len; i++) {
        uint8_t c = p[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            out[o++] = (char)c;
            continue;
        }
        out[o++] = '\\';
        switch (c) {
        case '"':
        case '\\':
            out[o++] = (char)c;
            break;
        case '\b':
            out[o++] = 'b';
            break;
        case '\f':
            out[o++] = 'f';
            break;
        case '\n':
            out[o++] = 'n';
            break;
        case '\r':
            out[o++] = 'r';
            break;
        case '\t':
            out[o++] = 't';
            break;
        default:
            out[o++] = 'u';
            out[o++] = '0';
            out[o++] = '0';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
            break;
        }
    }
    out[o++] = '"';
    out[o] = '\0';
    return o;
}
