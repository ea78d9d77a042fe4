/* Unit tests for the small codecs of src/text.c.  jansson is the oracle for
 * the JSON strings: the hand-written replies must read exactly as jansson
 * printed them before. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "text.h"

/* What jansson prints for the string @s/@len. */
static char *jansson_quote(const void *s, size_t len)
{
    json_t *str = json_stringn(s, len);
    assert_non_null(str);
    char *text = json_dumps(str, JSON_ENCODE_ANY | JSON_COMPACT);
    json_decref(str);
    assert_non_null(text);
    return text;
}

static void check_quote(const void *s, size_t len)
{
    char *want = jansson_quote(s, len);
    char *got = malloc(text_json_quote_size(len));
    assert_non_null(got);
    size_t n = text_json_quote(s, len, got);
    assert_int_equal(n, strlen(got));
    assert_string_equal(got, want);
    free(got);
    free(want);
}

/* Every ASCII byte alone and inside text, including NUL and DEL, comes out
 * as jansson writes it. */
static void test_json_quote_every_ascii_byte(void **state)
{
    (void)state;
    for (int c = 0; c < 0x80; c++) {
        char one = (char)c, mid[3] = {'a', (char)c, 'z'};
        check_quote(&one, 1);
        check_quote(mid, 3);
    }
    check_quote("", 0);
}

/* Multi-byte UTF-8 is copied through, and the worst case fits the room
 * text_json_quote_size promises. */
static void test_json_quote_utf8_and_worst_case(void **state)
{
    (void)state;
    static const char *const texts[] = {
        "caf\xc3\xa9", "\xe2\x82\xac 5", "\xf0\x9f\x98\x80/\"q\"\\",
        "path/with spaces\tand\nlines", "\xe2\x80\xa8 line separator",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
        check_quote(texts[i], strlen(texts[i]));

    char ctl[64];
    memset(ctl, 0x01, sizeof ctl);
    char out[sizeof ctl * 6 + 3];
    assert_int_equal(text_json_quote_size(sizeof ctl), sizeof out);
    assert_int_equal(text_json_quote(ctl, sizeof ctl, out), sizeof out - 1);
    check_quote(ctl, sizeof ctl);
}

/* text_u64 agrees with printf at every power of ten and its neighbours,
 * and at both ends of the range. */
static void test_u64_matches_printf(void **state)
{
    (void)state;
    char got[TEXT_U64_SIZE], want[32];
    uint64_t v = 1;

    for (int i = 0; i < 20; i++, v *= 10) {
        for (int d = -1; d <= 1; d++) {
            uint64_t x = v + (uint64_t)(int64_t)d;
            snprintf(want, sizeof want, "%llu", (unsigned long long)x);
            assert_int_equal(text_u64(x, got), strlen(want));
            assert_string_equal(got, want);
        }
    }
    assert_int_equal(text_u64(0, got), 1);
    assert_string_equal(got, "0");
    assert_int_equal(text_u64(UINT64_MAX, got), 20);
    assert_string_equal(got, "18446744073709551615");
}

/* base64 round trips for every length, in both alphabets. */
static void test_base64_round_trip(void **state)
{
    (void)state;
    uint8_t in[40], back[40 + 3];
    char enc[64];

    for (size_t i = 0; i < sizeof in; i++)
        in[i] = (uint8_t)(i * 37 + 250);
    for (size_t len = 0; len <= sizeof in; len++) {
        for (int url = 0; url <= 1; url++) {
            assert_true(text_base64_size(len) <= sizeof enc);
            size_t n = text_base64_encode(in, len, enc, url);
            assert_int_equal(n, strlen(enc));
            assert_int_equal(text_base64_decode(enc, n, back), (long)len);
            assert_memory_equal(back, in, len);
        }
    }
    assert_int_equal(text_base64_decode("a*==", 4, back), -1);
    assert_int_equal(text_base64_decode("abcde", 5, back), -1);
}

static void test_utf8_valid(void **state)
{
    (void)state;
    assert_true(text_utf8_valid("plain", 5));
    assert_true(text_utf8_valid("caf\xc3\xa9", 5));
    assert_true(text_utf8_valid("\xf4\x8f\xbf\xbf", 4));  /* U+10FFFF */
    assert_false(text_utf8_valid("\xc0\xaf", 2));         /* overlong */
    assert_false(text_utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
    assert_false(text_utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
    assert_false(text_utf8_valid("\xe2\x82", 2));         /* truncated */
    assert_false(text_utf8_valid("\xff", 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_quote_every_ascii_byte),
        cmocka_unit_test(test_json_quote_utf8_and_worst_case),
        cmocka_unit_test(test_u64_matches_printf),
        cmocka_unit_test(test_base64_round_trip),
        cmocka_unit_test(test_utf8_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
