// Token counts by how they are billed (Usage): their totals, their
// plausibility and their cost at a model's prices.
#include "usage/usage.h"

#include <initializer_list>

#include "base/saturating.h"

namespace spendcap {

std::int64_t Usage::input_total() const {
    return saturating_sum({input, cached_input, cache_write, cache_write_1h, cache_read});
}

std::int64_t Usage::total() const { return saturating_sum({input_total(), output}); }

bool plausible(const Usage &u) {
    for (std::int64_t v : {u.input, u.cached_input, u.cache_write, u.cache_write_1h, u.cache_read, u.output})
        if (v < 0 || v > kMaxPlausibleTokens) return false;
    return true;
}

Nanos usage_cost(const Usage &u, const ModelPrice &price) {
    return cost_of({
        {u.input, price.input},
        {u.cached_input, price.cached_input.value_or(price.input)},
        {u.cache_write, price.cache_write.value_or(price.input)},
        {u.cache_write_1h, price.cache_write_1h.value_or(price.cache_write.value_or(price.input))},
        {u.cache_read, price.cache_read.value_or(price.input)},
        {u.output, price.output},
    });
}

}  // namespace spendcap
