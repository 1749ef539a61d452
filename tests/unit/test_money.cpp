#include <budget/clock.hpp>
#include <budget/error.hpp>
#include <budget/money.hpp>

#include <doctest/doctest.h>

#include <climits>

using budget::Money;

TEST_CASE("Money parses exact decimal text") {
  CHECK(Money::parse("12.50").nanos() == 12'500'000'000);
  CHECK(Money::parse("0.000000150").nanos() == 150);
  CHECK(Money::parse("-3").nanos() == -3'000'000'000);
  CHECK(Money::parse("+.5").nanos() == 500'000'000);
  CHECK(Money::parse("7.").nanos() == 7'000'000'000);
  CHECK(Money::parse("0.1000000000000").nanos() == 100'000'000);
  CHECK(Money::parse("9223372036.854775807").nanos() == INT64_MAX);
  CHECK(Money::parse("-9223372036.854775808").nanos() == INT64_MIN);
}

TEST_CASE("Money rejects malformed and out-of-range text") {
  for (const char* bad : {"", "-", ".", "1e3", "NaN", "inf", "1.2.3", " 1", "1 ", "0x10", "1,5",
                          "0.0000000001", "--1", "1-"}) {
    CAPTURE(bad);
    CHECK_THROWS_AS(Money::parse(bad), budget::InvalidArgumentError);
  }
  CHECK_THROWS_AS(Money::parse("9223372036.854775808"), budget::OverflowError);
  CHECK_THROWS_AS(Money::parse("99999999999999999999999"), budget::OverflowError);
}

TEST_CASE("Money formats with at least two decimals") {
  CHECK(Money::parse("12.5").to_string() == "12.50");
  CHECK(Money::from_nanos(150).to_string() == "0.00000015");
  CHECK(Money::from_nanos(-3'000'000'000).to_string() == "-3.00");
  CHECK(Money::from_nanos(INT64_MIN).to_string() == "-9223372036.854775808");
  CHECK(Money().to_string() == "0.00");
  for (const char* s : {"0.00", "1.23456789", "-0.000000001", "9223372036.854775807"})
    CHECK(Money::parse(s).to_string() == s);
}

TEST_CASE("Money arithmetic is checked") {
  auto max = Money::from_nanos(INT64_MAX);
  CHECK_THROWS_AS(max + Money::from_nanos(1), budget::OverflowError);
  CHECK_THROWS_AS(-Money::from_nanos(INT64_MIN), budget::OverflowError);
  CHECK_THROWS_AS(max * 2, budget::OverflowError);
  CHECK_THROWS_AS(Money::from_units(INT64_MAX / 1000), budget::OverflowError);
  CHECK((Money::parse("1.10") + Money::parse("2.20")).to_string() == "3.30");
  CHECK(Money::from_nanos(10).mul_bp(12000).nanos() == 12);
  CHECK(Money::from_nanos(11).mul_bp(12000).nanos() == 14);  // 13.2 rounds up
  CHECK_THROWS_AS(max.mul_bp(20000), budget::OverflowError);
}

TEST_CASE("format_time writes UTC with milliseconds, rounding down before 1970, at both ends of int64") {
  using budget::format_time;
  using budget::from_millis;
  CHECK(format_time(from_millis(0)) == "1970-01-01T00:00:00.000Z");
  CHECK(format_time(from_millis(-1)) == "1969-12-31T23:59:59.999Z");
  CHECK(format_time(from_millis(-1001)) == "1969-12-31T23:59:58.999Z");
  CHECK(format_time(from_millis(1'700'000'000'123)) == "2023-11-14T22:13:20.123Z");
  CHECK(format_time(from_millis(951'782'400'000)) == "2000-02-29T00:00:00.000Z");   // a leap day
  CHECK(format_time(from_millis(4'107'542'399'999)) == "2100-02-28T23:59:59.999Z");  // no leap day
  CHECK(format_time(from_millis(4'107'542'400'000)) == "2100-03-01T00:00:00.000Z");
  CHECK(format_time(from_millis(-62'135'596'800'000)) == "0001-01-01T00:00:00.000Z");
  CHECK(format_time(from_millis(253'402'300'799'999)) == "9999-12-31T23:59:59.999Z");
  // Past 2262 fmt's chrono formatting overflowed (system_clock counts nanoseconds).
  CHECK(format_time(from_millis(32'503'680'000'000)) == "3000-01-01T00:00:00.000Z");
  CHECK(format_time(from_millis(INT64_MAX)) == "292278994-08-17T07:12:55.807Z");
  // Near INT64_MIN the floor division overflowed (and the milliseconds came out as "1808").
  CHECK(format_time(from_millis(INT64_MIN)) == "-292275055-05-16T16:47:04.192Z");
}
