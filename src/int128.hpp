// 128-bit integers for exact intermediate products (GCC/Clang extension, used privately).
#pragma once
namespace budget::detail {
__extension__ typedef __int128 int128;
__extension__ typedef unsigned __int128 uint128;
}  // namespace budget::detail
