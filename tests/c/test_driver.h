/* The driver of the C test programs: `prog <name>` runs one case (CTest registers one test per
 * case), `prog` runs them all. C99. */
#ifndef BUDGET_TEST_DRIVER_H
#define BUDGET_TEST_DRIVER_H

#include <stdio.h>
#include <string.h>

typedef struct test_case {
  const char *name;
  void (*fn)(void);
} test_case;

/* Runs the case named by argv[1] (every case without one); the exit status: 0 when no check
 * failed (*failures == 0), 1 when one did, 2 for an unknown name. */
static int run_cases(const test_case *tests, size_t n, int argc, char **argv, const int *failures) {
  size_t i, ran = 0;
  for (i = 0; i < n; ++i) {
    if (argc > 1 && strcmp(argv[1], tests[i].name) != 0) continue;
    tests[i].fn();
    ++ran;
  }
  if (ran == 0) {
    fprintf(stderr, "no test named '%s'\n", argc > 1 ? argv[1] : "");
    return 2;
  }
  if (*failures) fprintf(stderr, "%d check(s) failed\n", *failures);
  return *failures ? 1 : 0;
}

#endif
