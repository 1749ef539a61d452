// SHA-256 (FIPS 180-4), for the ledger's hash chain. Our own small implementation rather
// than a crypto dependency: the chain needs one hash function and nothing else from a crypto
// library. A portable compression function, and one with the x86 SHA extensions (SHA-NI, ~4x
// faster, bench_core prints both) that sha256() picks at run time by CPUID.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace budget::detail {
std::array<uint8_t, 32> sha256(std::string_view data);
std::string sha256_hex(std::string_view data);
// The portable implementation, whatever the CPU (sha256() uses SHA-NI where the CPU has it).
std::array<uint8_t, 32> sha256_portable(std::string_view data);
bool sha256_accelerated();
}  // namespace budget::detail
