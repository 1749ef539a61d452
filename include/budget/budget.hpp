// libbudget — the whole C++ API.
#pragma once
#include <budget/clock.hpp>
#include <budget/error.hpp>
#include <budget/ledger.hpp>
#include <budget/limits.hpp>
#include <budget/manager.hpp>
#include <budget/money.hpp>
#include <budget/scope.hpp>
#include <budget/usage.hpp>
#include <budget/version.h>
#if __has_include(<budget/pricing.hpp>)
#include <budget/pricing.hpp>
#endif
#if __has_include(<budget/providers.hpp>)
#include <budget/providers.hpp>
#endif
