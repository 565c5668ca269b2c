// base/saturating.h: the one saturating arithmetic of the core.
#include "base/saturating.h"

#include <gtest/gtest.h>

#include <limits>

namespace spendcap {
namespace {

constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
constexpr std::int64_t kMin = std::numeric_limits<std::int64_t>::min();

TEST(Saturating, AddAndSubStopAtTheEnds) {
    EXPECT_EQ(saturating_add(2, 3), 5);
    EXPECT_EQ(saturating_add(kMax, 1), kMax);
    EXPECT_EQ(saturating_add(kMax, kMax), kMax);
    EXPECT_EQ(saturating_add(kMin, -1), kMin);
    EXPECT_EQ(saturating_add(kMin, kMax), -1);
    EXPECT_EQ(saturating_sub(2, 3), -1);
    EXPECT_EQ(saturating_sub(kMin, 1), kMin);
    EXPECT_EQ(saturating_sub(kMax, -1), kMax);
    EXPECT_EQ(saturating_sub(0, kMin), kMax);
    EXPECT_EQ(saturating_sub(-1, kMin), kMax);
}

TEST(Saturating, NegatableNeverGivesInt64Min) {
    EXPECT_EQ(negatable_add(kMin + 1, -1), -kMax);
    EXPECT_EQ(negatable_sub(0, kMax), -kMax);
    EXPECT_EQ(negatable_sub(-1, kMax), -kMax);
    EXPECT_EQ(negatable_sub(0, kMin), kMax);
    EXPECT_EQ(negatable_add(kMax, 1), kMax);
    EXPECT_EQ(negatable_add(-kMax, 0), -kMax);
    EXPECT_EQ(negatable_sub(7, 2), 5);
}

TEST(Saturating, SumCountsNegativePartsAsZero) {
    EXPECT_EQ(saturating_sum({}), 0);
    EXPECT_EQ(saturating_sum({1, 2, 3}), 6);
    EXPECT_EQ(saturating_sum({5, -7, 1}), 6);
    EXPECT_EQ(saturating_sum({kMax, 1}), kMax);
    EXPECT_EQ(saturating_sum({kMax, kMax, kMax}), kMax);
    EXPECT_EQ(saturating_sum({kMin, kMin}), 0);
}

}  // namespace
}  // namespace spendcap
