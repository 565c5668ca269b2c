#include "base/keyed_batches.h"

#include <gtest/gtest.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

using spendcap::KeyedBatches;

namespace {

struct Batch {
    std::vector<int> items;
};

}  // namespace

TEST(KeyedBatches, OneBatchPerKey) {
    KeyedBatches<std::string, Batch> batches;
    batches.waiting("a").items.push_back(1);
    batches.waiting("a").items.push_back(2);
    batches.waiting("b").items.push_back(3);
    ASSERT_NE(batches.find("a"), nullptr);
    EXPECT_EQ(batches.find("a")->items, (std::vector<int>{1, 2}));
    EXPECT_EQ(batches.find("c"), nullptr);
}

TEST(KeyedBatches, TakeRemovesTheBatch) {
    KeyedBatches<std::string, Batch> batches;
    batches.waiting("a").items.push_back(1);
    Batch out;
    EXPECT_TRUE(batches.take("a", out));
    EXPECT_EQ(out.items, std::vector<int>{1});
    EXPECT_FALSE(batches.take("a", out));
    EXPECT_TRUE(batches.empty());
}

// A send that throws must not take the other batches with it: each is
// handed over once (the glue's batches are owned by the send, and requests
// point at them), and the failure is reported with its key.
TEST(KeyedBatches, AThrowingSendLeavesTheOthersSent) {
    KeyedBatches<std::string, std::unique_ptr<Batch>> batches;
    for (const char *key : {"a", "b", "c"}) {
        batches.waiting(key) = std::make_unique<Batch>();
        batches.waiting(key)->items.push_back(key[0]);
    }
    std::vector<int> sent;
    std::vector<std::string> failed;
    std::vector<std::unique_ptr<Batch>> kept;
    batches.send_all(
        [&](std::unique_ptr<Batch> batch) {
            if (batch->items.front() == 'b') {
                kept.push_back(std::move(batch));  // the send owns it, then fails
                throw std::runtime_error("out of memory");
            }
            sent.push_back(batch->items.front());
        },
        [&](const std::string &key, const char *what) { failed.push_back(key + ": " + what); });
    EXPECT_EQ(sent, (std::vector<int>{'a', 'c'}));
    EXPECT_EQ(failed, std::vector<std::string>{"b: out of memory"});
    ASSERT_EQ(kept.size(), 1u);
    EXPECT_EQ(kept.front()->items, std::vector<int>{'b'});
    EXPECT_TRUE(batches.empty());
}

// A send that starts a new batch (a request answered at once reserving
// again) leaves it for the next flush instead of invalidating this one.
TEST(KeyedBatches, BatchesStartedDuringSendWaitForTheNextFlush) {
    KeyedBatches<std::string, Batch> batches;
    batches.waiting("a").items.push_back(1);
    batches.waiting("b").items.push_back(2);
    std::vector<int> sent;
    auto send = [&](Batch batch) {
        sent.insert(sent.end(), batch.items.begin(), batch.items.end());
        if (batch.items.front() == 1) {
            batches.waiting("a").items.push_back(10);
        }
    };
    auto failed = [](const std::string &, const char *) { FAIL(); };
    batches.send_all(send, failed);
    EXPECT_EQ(sent, (std::vector<int>{1, 2}));
    ASSERT_NE(batches.find("a"), nullptr);
    batches.send_all(send, failed);
    EXPECT_EQ(sent, (std::vector<int>{1, 2, 10}));
    EXPECT_TRUE(batches.empty());
}
