/* json.c: tests for core/json.c. */
#include "../../core/json.h"

#include "test.h"

#define SKIP(fn, text, at) fn(text, strlen(text), at)

TEST(json_skip_value_finds_the_end_of_each_kind)
{
    ASSERT_EQ(SKIP(sl_json_skip_value, "\"a\\\"b\",1", 0), 6);
    ASSERT_EQ(SKIP(sl_json_skip_value, "12.5e3}", 0), 6);
    ASSERT_EQ(SKIP(sl_json_skip_value, "true ,", 0), 4);
    ASSERT_EQ(SKIP(sl_json_skip_value, "null]", 0), 4);
    /* Brackets inside strings do not count; nesting does. */
    const char *obj = "{\"a\":[1,{\"b\":\"]}\"}],\"c\":{}} tail";
    ASSERT_EQ(SKIP(sl_json_skip_value, obj, 0), strlen(obj) - 5);
    ASSERT_EQ(SKIP(sl_json_skip_value, "[[],[[]]],", 0), 9);
}

TEST(json_skip_stops_at_the_end_of_truncated_text)
{
    ASSERT_EQ(SKIP(sl_json_skip_value, "{\"a\":[1,2", 0), 9);
    ASSERT_EQ(SKIP(sl_json_skip_string, "\"abc\\", 0), 5);
    ASSERT_EQ(SKIP(sl_json_skip_value, "", 0), 0);
    ASSERT_EQ(sl_json_skip_value("x", 1, 5), 1);
}

TEST(json_skip_ws_and_strings)
{
    ASSERT_EQ(SKIP(sl_json_skip_ws, " \t\r\n:", 0), 4);
    ASSERT_EQ(SKIP(sl_json_skip_ws, "x", 0), 0);
    ASSERT_EQ(SKIP(sl_json_skip_string, "\"\\\\\"x", 0), 4);
}

#define VALID(text) sl_json_valid(text, strlen(text))

TEST(json_valid_accepts_json)
{
    ASSERT(VALID("{}"));
    ASSERT(VALID(" {\"a\": [1, -2.5e+3, 0, true, false, null, \"x\\u00e9\\n\"], \"b\": {}} "));
    ASSERT(VALID("[]"));
    ASSERT(VALID("\"\\\\\\\"\\/\""));
    ASSERT(VALID("-0.0E-7"));
}

TEST(json_valid_refuses_what_is_not)
{
    ASSERT(!VALID(""));
    ASSERT(!VALID("{"));
    ASSERT(!VALID("{\"a\":1,}"));
    ASSERT(!VALID("[1 2]"));
    ASSERT(!VALID("{a:1}"));
    ASSERT(!VALID("01"));
    ASSERT(!VALID("1."));
    ASSERT(!VALID("NaN"));
    ASSERT(!VALID("\"tab\there\""));
    ASSERT(!VALID("\"\\x\""));
    ASSERT(!VALID("\"\\u12\""));
    ASSERT(!VALID("{} {}"));
    ASSERT(!VALID("tru"));
    /* Nesting deeper than the limit is refused, not followed down the stack. */
    static char deep[2 * (SL_JSON_MAX_DEPTH + 1) + 1];
    for (int i = 0; i <= SL_JSON_MAX_DEPTH; i++) {
        deep[i] = '[';
        deep[2 * (SL_JSON_MAX_DEPTH + 1) - 1 - i] = ']';
    }
    ASSERT(!VALID(deep));
    /* One level less is at the limit, and fine. */
    static char limit[2 * SL_JSON_MAX_DEPTH + 1];
    for (int i = 0; i < SL_JSON_MAX_DEPTH; i++) {
        limit[i] = '[';
        limit[2 * SL_JSON_MAX_DEPTH - 1 - i] = ']';
    }
    ASSERT(VALID(limit));
}
