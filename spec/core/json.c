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
