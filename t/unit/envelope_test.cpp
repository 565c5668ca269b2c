// Error envelopes: exact bytes, because client SDKs parse them.
#include "http/envelope.h"

#include <gtest/gtest.h>

namespace spendcap {
namespace {

constexpr std::int64_t k2026_12_01 = 1'796'083'200;

TEST(ErrorCodes, NamesAndStatuses) {
    EXPECT_STREQ(error_code_name(ErrorCode::spend_limit_exceeded), "spend_limit_exceeded");
    EXPECT_STREQ(error_code_name(ErrorCode::insufficient_credit), "insufficient_credit");
    EXPECT_STREQ(error_code_name(ErrorCode::invalid_api_key), "invalid_api_key");
    EXPECT_STREQ(error_code_name(ErrorCode::api_key_expired), "api_key_expired");
    EXPECT_STREQ(error_code_name(ErrorCode::api_key_revoked), "api_key_revoked");
    EXPECT_STREQ(error_code_name(ErrorCode::invalid_request), "invalid_request");
    EXPECT_STREQ(error_code_name(ErrorCode::model_not_priced), "model_not_priced");
    EXPECT_STREQ(error_code_name(ErrorCode::spend_cap_unavailable), "spend_cap_unavailable");

    EXPECT_EQ(error_status(ErrorCode::spend_limit_exceeded), 402);
    EXPECT_EQ(error_status(ErrorCode::insufficient_credit), 402);
    EXPECT_EQ(error_status(ErrorCode::invalid_api_key), 401);
    EXPECT_EQ(error_status(ErrorCode::api_key_expired), 401);
    EXPECT_EQ(error_status(ErrorCode::api_key_revoked), 401);
    EXPECT_EQ(error_status(ErrorCode::invalid_request), 400);
    EXPECT_EQ(error_status(ErrorCode::model_not_priced), 400);
    EXPECT_EQ(error_status(ErrorCode::spend_cap_unavailable), 503);
}

TEST(ErrorCodes, TheCallersOwnErrorsAreItsKeyAndItsBody) {
    for (ErrorCode c : {ErrorCode::invalid_api_key, ErrorCode::api_key_expired, ErrorCode::api_key_revoked,
                        ErrorCode::invalid_request, ErrorCode::model_not_priced}) {
        EXPECT_TRUE(callers_error(c)) << error_code_name(c);
    }
    for (ErrorCode c : {ErrorCode::spend_limit_exceeded, ErrorCode::request_limit_exceeded,
                        ErrorCode::token_limit_exceeded, ErrorCode::insufficient_credit,
                        ErrorCode::rate_limit_exceeded, ErrorCode::spend_cap_unavailable}) {
        EXPECT_FALSE(callers_error(c)) << error_code_name(c);
    }
}

TEST(CapMessage, UsesTheScopeWordAndWindow) {
    EXPECT_EQ(cap_message({Scope::key, Window::monthly, k2026_12_01}),
              "api key has reached its monthly spend limit");
    EXPECT_EQ(cap_message({Scope::project, Window::daily, k2026_12_01}),
              "project has reached its daily spend limit");
    EXPECT_EQ(cap_message({Scope::org, Window::lifetime, 0}), "account has reached its lifetime spend limit");
}

TEST(RenderError, OpenAiSpendCap) {
    const ErrorReply reply = render_error(Surface::openai, ErrorCode::spend_limit_exceeded, "",
                                          CapRef{Scope::key, Window::monthly, k2026_12_01});
    EXPECT_EQ(reply.status, 402);
    EXPECT_EQ(reply.retry_after, 0);
    EXPECT_EQ(reply.body,
              R"({"error":{"message":"api key has reached its monthly spend limit","type":"invalid_request_error",)"
              R"("param":null,"code":"spend_limit_exceeded","scope":"key","window":"monthly",)"
              R"("reset_at":"2026-12-01T00:00:00Z"}})");
}

TEST(RenderError, AnthropicSpendCap) {
    const ErrorReply reply = render_error(Surface::anthropic, ErrorCode::spend_limit_exceeded, "",
                                          CapRef{Scope::key, Window::monthly, k2026_12_01});
    EXPECT_EQ(reply.status, 402);
    EXPECT_EQ(reply.retry_after, 0);
    EXPECT_EQ(reply.body,
              R"({"type":"error","error":{"type":"billing_error",)"
              R"("message":"api key has reached its monthly spend limit","code":"spend_limit_exceeded",)"
              R"("scope":"key","window":"monthly","reset_at":"2026-12-01T00:00:00Z"}})");
}

TEST(RenderError, LifetimeCapHasNullReset) {
    const ErrorReply reply = render_error(Surface::openai, ErrorCode::spend_limit_exceeded, "",
                                          CapRef{Scope::org, Window::lifetime, 0});
    EXPECT_EQ(reply.body,
              R"({"error":{"message":"account has reached its lifetime spend limit","type":"invalid_request_error",)"
              R"("param":null,"code":"spend_limit_exceeded","scope":"org","window":"lifetime","reset_at":null}})");
}

TEST(RenderError, ProjectDailyCapOnAnthropic) {
    const ErrorReply reply = render_error(Surface::anthropic, ErrorCode::spend_limit_exceeded, "",
                                          CapRef{Scope::project, Window::daily, 1'798'761'600});
    EXPECT_EQ(reply.body,
              R"({"type":"error","error":{"type":"billing_error","message":"project has reached its daily spend limit",)"
              R"("code":"spend_limit_exceeded","scope":"project","window":"daily","reset_at":"2027-01-01T00:00:00Z"}})");
}

TEST(RenderError, IdentityErrorsUseDefaultMessages) {
    EXPECT_EQ(render_error(Surface::openai, ErrorCode::invalid_api_key, "").body,
              R"({"error":{"message":"invalid api key","type":"invalid_request_error","param":null,"code":"invalid_api_key"}})");
    EXPECT_EQ(render_error(Surface::anthropic, ErrorCode::invalid_api_key, "").body,
              R"({"type":"error","error":{"type":"authentication_error","message":"invalid api key","code":"invalid_api_key"}})");
    EXPECT_EQ(render_error(Surface::openai, ErrorCode::api_key_expired, "").body,
              R"({"error":{"message":"api key has expired","type":"invalid_request_error","param":null,"code":"api_key_expired"}})");
    EXPECT_EQ(render_error(Surface::anthropic, ErrorCode::api_key_revoked, "").body,
              R"({"type":"error","error":{"type":"authentication_error","message":"api key has been revoked","code":"api_key_revoked"}})");
    EXPECT_EQ(render_error(Surface::openai, ErrorCode::api_key_revoked, "").status, 401);
}

TEST(RenderError, BadRequests) {
    const ErrorReply openai = render_error(Surface::openai, ErrorCode::model_not_priced, "");
    EXPECT_EQ(openai.status, 400);
    EXPECT_EQ(openai.retry_after, 0);
    EXPECT_EQ(openai.body,
              R"({"error":{"message":"model is not priced","type":"invalid_request_error","param":null,"code":"model_not_priced"}})");
    EXPECT_EQ(render_error(Surface::anthropic, ErrorCode::invalid_request, "request body is not valid JSON").body,
              R"({"type":"error","error":{"type":"invalid_request_error","message":"request body is not valid JSON","code":"invalid_request"}})");
    EXPECT_EQ(render_error(Surface::openai, ErrorCode::invalid_request, "").body,
              R"({"error":{"message":"invalid request","type":"invalid_request_error","param":null,"code":"invalid_request"}})");
}

TEST(RenderError, UnavailableAsksForARetry) {
    const ErrorReply openai = render_error(Surface::openai, ErrorCode::spend_cap_unavailable, "");
    EXPECT_EQ(openai.status, 503);
    EXPECT_EQ(openai.retry_after, 1);
    EXPECT_EQ(openai.body,
              R"({"error":{"message":"spend cap service unavailable, retry shortly","type":"server_error","param":null,"code":"spend_cap_unavailable"}})");
    const ErrorReply anthropic = render_error(Surface::anthropic, ErrorCode::spend_cap_unavailable, "");
    EXPECT_EQ(anthropic.retry_after, 1);
    EXPECT_EQ(anthropic.body,
              R"({"type":"error","error":{"type":"api_error","message":"spend cap service unavailable, retry shortly","code":"spend_cap_unavailable"}})");
}

TEST(RenderError, InsufficientCredit) {
    const ErrorReply reply = render_error(Surface::anthropic, ErrorCode::insufficient_credit, "");
    EXPECT_EQ(reply.status, 402);
    EXPECT_EQ(reply.retry_after, 0);
    EXPECT_EQ(reply.body,
              R"({"type":"error","error":{"type":"billing_error","message":"insufficient credit balance","code":"insufficient_credit"}})");
}

TEST(RenderError, RequestAndTokenCaps) {
    const ErrorReply requests = render_error(
        Surface::openai, ErrorCode::request_limit_exceeded, "",
        CapRef{Scope::key, Window::daily, k2026_12_01, LimitKind::requests});
    EXPECT_EQ(requests.status, 402);
    EXPECT_EQ(requests.retry_after, 0);
    EXPECT_EQ(requests.body,
              R"({"error":{"message":"api key has reached its daily request limit","type":"invalid_request_error","param":null,)"
              R"("code":"request_limit_exceeded","scope":"key","window":"daily","reset_at":"2026-12-01T00:00:00Z"}})");
    const ErrorReply tokens = render_error(
        Surface::anthropic, ErrorCode::token_limit_exceeded, "",
        CapRef{Scope::org, Window::monthly, k2026_12_01, LimitKind::tokens});
    EXPECT_EQ(tokens.body,
              R"({"type":"error","error":{"type":"billing_error","message":"account has reached its monthly token limit",)"
              R"("code":"token_limit_exceeded","scope":"org","window":"monthly","reset_at":"2026-12-01T00:00:00Z"}})");
}

TEST(RenderError, RatesAnswer429WithRetryAfterToTheMinutesEnd) {
    const std::int64_t minute_end = k2026_12_01 + 60;
    const ErrorReply rpm = render_error(Surface::openai, ErrorCode::rate_limit_exceeded, "",
                                        CapRef{Scope::customer, Window::daily, minute_end, LimitKind::rpm, 17});
    EXPECT_EQ(rpm.status, 429);
    EXPECT_EQ(rpm.retry_after, 17);
    EXPECT_EQ(rpm.body,
              R"({"error":{"message":"customer has exceeded its requests per minute limit","type":"invalid_request_error",)"
              R"("param":null,"code":"rate_limit_exceeded","scope":"customer","window":"minute","reset_at":"2026-12-01T00:01:00Z"}})");
    const ErrorReply tpm = render_error(Surface::anthropic, ErrorCode::rate_limit_exceeded, "",
                                        CapRef{Scope::project, Window::daily, minute_end, LimitKind::tpm, 0});
    EXPECT_EQ(tpm.retry_after, 1);  // never "retry after 0"
    EXPECT_EQ(tpm.body,
              R"({"type":"error","error":{"type":"rate_limit_error","message":"project has exceeded its tokens per minute limit",)"
              R"("code":"rate_limit_exceeded","scope":"project","window":"minute","reset_at":"2026-12-01T00:01:00Z"}})");
}

TEST(RenderError, BalanceNamesTheOrgButNoWindow) {
    const ErrorReply reply = render_error(Surface::openai, ErrorCode::insufficient_credit, "",
                                          CapRef{Scope::org, Window::lifetime, 0, LimitKind::balance});
    EXPECT_EQ(reply.status, 402);
    EXPECT_EQ(reply.retry_after, 0);
    EXPECT_EQ(reply.body,
              R"({"error":{"message":"insufficient credit balance","type":"invalid_request_error","param":null,)"
              R"("code":"insufficient_credit","scope":"org"}})");
}

TEST(BlockedBy, NamesScopeAndLimit) {
    EXPECT_EQ(blocked_by_label({Scope::key, Window::monthly, 0}), "key:monthly");
    EXPECT_EQ(blocked_by_label({Scope::key, Window::daily, 0, LimitKind::requests}), "key:daily_requests");
    EXPECT_EQ(blocked_by_label({Scope::project, Window::monthly, 0, LimitKind::tokens}), "project:monthly_tokens");
    EXPECT_EQ(blocked_by_label({Scope::customer, Window::daily, 0, LimitKind::rpm}), "customer:rpm");
    EXPECT_EQ(blocked_by_label({Scope::org, Window::daily, 0, LimitKind::tpm}), "org:tpm");
    EXPECT_EQ(blocked_by_label({Scope::org, Window::lifetime, 0, LimitKind::balance}), "org:balance");
}

TEST(BlockedBy, TheLimitAsThePolicyFileNamesIt) {
    EXPECT_EQ(limit_label({Scope::key, Window::monthly, 0}), "monthly_usd");
    EXPECT_EQ(limit_label({Scope::key, Window::lifetime, 0}), "lifetime_usd");
    EXPECT_EQ(limit_label({Scope::key, Window::daily, 0, LimitKind::requests}), "daily_requests");
    EXPECT_EQ(limit_label({Scope::project, Window::monthly, 0, LimitKind::tokens}), "monthly_tokens");
    EXPECT_EQ(limit_label({Scope::customer, Window::daily, 0, LimitKind::rpm}), "rpm");
    EXPECT_EQ(limit_label({Scope::org, Window::daily, 0, LimitKind::tpm}), "tpm");
    EXPECT_EQ(limit_label({Scope::org, Window::lifetime, 0, LimitKind::balance}), "balance");
}

TEST(RenderError, CapFieldsOnlyForCapErrors) {
    // A cap passed with another code must not leak scope/window fields.
    const ErrorReply reply = render_error(Surface::openai, ErrorCode::invalid_api_key, "",
                                          CapRef{Scope::key, Window::daily, k2026_12_01});
    EXPECT_EQ(reply.body,
              R"({"error":{"message":"invalid api key","type":"invalid_request_error","param":null,"code":"invalid_api_key"}})");
}

TEST(RenderError, ExplicitMessageWinsOverTheCapMessage) {
    const ErrorReply reply = render_error(Surface::openai, ErrorCode::spend_limit_exceeded, "custom",
                                          CapRef{Scope::key, Window::daily, k2026_12_01});
    EXPECT_EQ(reply.body,
              R"({"error":{"message":"custom","type":"invalid_request_error","param":null,"code":"spend_limit_exceeded",)"
              R"("scope":"key","window":"daily","reset_at":"2026-12-01T00:00:00Z"}})");
}

TEST(RenderError, EscapesMessages) {
    const std::string message = "model \"gpt\\x\"\n\t\x01 caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80";
    EXPECT_EQ(render_error(Surface::openai, ErrorCode::model_not_priced, message).body,
              "{\"error\":{\"message\":\"model \\\"gpt\\\\x\\\"\\n\\t\\u0001 caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\","
              "\"type\":\"invalid_request_error\",\"param\":null,\"code\":\"model_not_priced\"}}");
}

TEST(RenderError, ReplacesInvalidUtf8) {
    // A stray continuation byte, a truncated sequence, an overlong '/' and a surrogate.
    const std::string message = std::string("a\x80") + "b\xc3" + "c\xc0\xaf" + "d\xed\xa0\x80";
    EXPECT_EQ(render_error(Surface::anthropic, ErrorCode::invalid_request, message).body,
              R"({"type":"error","error":{"type":"invalid_request_error",)"
              R"("message":"a\ufffdb\ufffdc\ufffd\ufffdd\ufffd\ufffd\ufffd","code":"invalid_request"}})");
}

}  // namespace
}  // namespace spendcap
