// The doctest main of every C++ test program.
//
// CTest runs each case alone, as `--test-case=<name>` (doctest_discover_tests). A name the
// discovery mangles matches no case — CMake splits a name at ';', so "a; b" became the two
// tests "a" and " b" — and doctest calls a run of no case a success: a test that could not
// fail (seven conformance and store cases ran that way until 2026-12-04). Here a run with a
// test-case filter that matched no case fails.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <string_view>

namespace {

int g_matched = -1;  // test cases that passed the filters, once a run ended

struct CountMatched : doctest::IReporter {
  explicit CountMatched(const doctest::ContextOptions&) {}
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats& s) override { g_matched = static_cast<int>(s.numTestCasesPassingFilters); }
  void test_case_start(const doctest::TestCaseData&) override {}
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats&) override {}
  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}
};
REGISTER_LISTENER("count-matched", 1, CountMatched);

bool names_test_cases(std::string_view arg) {
  for (std::string_view p : {"--test-case=", "-tc=", "--dt-test-case=", "--dt-tc="})
    if (arg.substr(0, p.size()) == p) return true;
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  doctest::Context context(argc, argv);
  const int rc = context.run();
  if (context.shouldExit()) return rc;
  bool filtered = false;
  for (int i = 1; i < argc; ++i) filtered = filtered || names_test_cases(argv[i]);
  if (rc == 0 && filtered && g_matched == 0) {
    std::fprintf(stderr, "error: no test case matches the --test-case filter (a name mangled by test discovery?)\n");
    return 1;
  }
  return rc;
}
