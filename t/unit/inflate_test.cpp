// Compressed response bodies: gzip and deflate (zlib-wrapped and raw), JSON
// and SSE, in any pieces; corrupt, truncated and oddly framed streams; the
// memory bound with zlib's state.
#include "usage/usage.h"
#include "usage_test_support.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

using namespace spendcap;
using namespace spendcap::test;

namespace {

using State = UsageScanner::State;

std::string read_data(const std::string &path) { return read_test_data(path); }

enum class Wrap { gzip, zlib, raw };

// A streaming compressor: push() plain bytes, compressed ones come out.
class Compressor {
public:
    explicit Compressor(Wrap wrap, int level = 6) {
        const int bits = wrap == Wrap::gzip ? 15 + 16 : wrap == Wrap::zlib ? 15 : -15;
        EXPECT_EQ(deflateInit2(&z_, level, Z_DEFLATED, bits, 8, Z_DEFAULT_STRATEGY), Z_OK);
    }
    ~Compressor() { deflateEnd(&z_); }
    Compressor(const Compressor &) = delete;
    Compressor &operator=(const Compressor &) = delete;

    std::string push(std::string_view plain) { return run(plain, Z_NO_FLUSH); }
    std::string end() { return run({}, Z_FINISH); }
    z_stream &stream() { return z_; }

private:
    std::string run(std::string_view plain, int flush) {
        std::string out;
        z_.next_in = reinterpret_cast<Bytef *>(const_cast<char *>(plain.data()));
        z_.avail_in = static_cast<uInt>(plain.size());
        unsigned char buffer[16384];
        do {
            z_.next_out = buffer;
            z_.avail_out = sizeof buffer;
            const int rc = deflate(&z_, flush);
            EXPECT_NE(rc, Z_STREAM_ERROR);
            if (rc == Z_STREAM_ERROR) break;
            out.append(reinterpret_cast<char *>(buffer), sizeof buffer - z_.avail_out);
        } while (z_.avail_out == 0 || z_.avail_in > 0);
        return out;
    }
    z_stream z_{};
};

std::string compress(std::string_view plain, Wrap wrap, int level = 6) {
    Compressor c(wrap, level);
    std::string out = c.push(plain);  // (the operands of + are not sequenced)
    return out + c.end();
}

struct Scan {
    std::string state;
    std::string usage;
    std::string error;
    bool operator==(const Scan &o) const { return state == o.state && usage == o.usage && error == o.error; }
};

std::ostream &operator<<(std::ostream &os, const Scan &s) {
    return os << s.state << " [" << s.usage << "] " << s.error;
}

Scan scan(const std::string &body, Surface surface, BodyFormat format, ContentEncoding encoding,
          std::size_t piece = 0) {
    UsageScanner scanner(surface, format, encoding);
    if (piece == 0) {
        scanner.feed(body);
    } else {
        for (std::size_t at = 0; at < body.size(); at += piece)
            scanner.feed(std::string_view(body).substr(at, piece));
    }
    scanner.finish();
    return {state_name(scanner.state()), describe(scanner.usage()), scanner.error()};
}

struct Body {
    const char *path;
    Surface surface;
    BodyFormat format;
    const char *usage;  // expected
};

const Body kBodies[] = {
    {"responses/openai_chat_completion.json", Surface::openai, BodyFormat::json,
     "input=93 cached_input=1024 cache_write=0 cache_read=0 output=46"},
    {"responses/openai_responses.json", Surface::openai, BodyFormat::json,
     "input=200 cached_input=128 cache_write=0 cache_read=0 output=852"},
    {"responses/openai_embeddings.json", Surface::openai, BodyFormat::json,
     "input=5 cached_input=0 cache_write=0 cache_read=0 output=0"},
    {"responses/anthropic_message.json", Surface::anthropic, BodyFormat::json,
     "input=2095 cached_input=0 cache_write=2051 cache_read=12000 output=503"},
    {"streams/openai_chat.sse", Surface::openai, BodyFormat::sse,
     "input=93 cached_input=1024 cache_write=0 cache_read=0 output=46"},
    {"streams/anthropic_messages.sse", Surface::anthropic, BodyFormat::sse,
     "input=2095 cached_input=0 cache_write=2051 cache_read=12000 output=503"},
    {"streams/openai_responses.sse", Surface::openai, BodyFormat::sse,
     "input=200 cached_input=128 cache_write=0 cache_read=0 output=52"},
};

struct Coding {
    Wrap wrap;
    ContentEncoding encoding;
    const char *name;
};

const Coding kCodings[] = {
    {Wrap::gzip, ContentEncoding::gzip, "gzip"},
    {Wrap::zlib, ContentEncoding::deflate, "deflate (zlib)"},
    {Wrap::raw, ContentEncoding::deflate, "deflate (raw)"},
    {Wrap::zlib, ContentEncoding::gzip, "gzip declared, zlib sent"},
};

}  // namespace

TEST(Inflate, EveryBodyEveryCodingAnyPieces) {
    for (const Body &body : kBodies) {
        const std::string plain = read_data(body.path);
        ASSERT_FALSE(plain.empty()) << body.path;
        for (const Coding &coding : kCodings) {
            for (int level : {1, 9}) {
                const std::string packed = compress(plain, coding.wrap, level);
                for (std::size_t piece : {std::size_t(0), std::size_t(1), std::size_t(3), std::size_t(17)}) {
                    const Scan got = scan(packed, body.surface, body.format, coding.encoding, piece);
                    EXPECT_EQ(got, (Scan{"found", body.usage, ""}))
                        << body.path << " " << coding.name << " level " << level << " piece " << piece;
                }
            }
        }
    }
}

TEST(Inflate, SplitAtEveryByte) {
    for (const Body &body : kBodies) {
        for (const Coding &coding : kCodings) {
            const std::string packed = compress(read_data(body.path), coding.wrap);
            for (std::size_t cut = 0; cut <= packed.size(); ++cut) {
                UsageScanner scanner(body.surface, body.format, coding.encoding);
                scanner.feed(std::string_view(packed).substr(0, cut));
                scanner.feed(std::string_view(packed).substr(cut));
                scanner.finish();
                ASSERT_EQ(scanner.state(), State::found)
                    << body.path << " " << coding.name << " cut " << cut << ": " << scanner.error();
                ASSERT_EQ(describe(scanner.usage()), body.usage);
            }
        }
    }
}

TEST(Inflate, EveryTruncationEndsEarly) {
    for (const Body &body : kBodies) {
        for (const Coding &coding : kCodings) {
            const std::string packed = compress(read_data(body.path), coding.wrap);
            for (std::size_t length = 1; length < packed.size(); ++length) {
                const Scan got = scan(packed.substr(0, length), body.surface, body.format, coding.encoding, 7);
                ASSERT_EQ(got.state, "malformed") << body.path << " " << coding.name << " length " << length;
                ASSERT_EQ(got.error, "compressed body ended early")
                    << body.path << " " << coding.name << " length " << length;
                if (body.format == BodyFormat::json) EXPECT_EQ(got.usage, "none");
            }
        }
    }
}

TEST(Inflate, EmptyCompressedBodyIsAnEmptyBody) {
    for (const Coding &coding : kCodings) {
        EXPECT_EQ(scan("", Surface::openai, BodyFormat::json, coding.encoding),
                  (Scan{"malformed", "none", "response body is empty"}));
        EXPECT_EQ(scan("", Surface::openai, BodyFormat::sse, coding.encoding),
                  (Scan{"malformed", "none", "stream ended before its final event"}));
    }
}

TEST(Inflate, CorruptBodies) {
    const std::string plain = read_data("responses/openai_chat_completion.json");
    const std::string gz = compress(plain, Wrap::gzip);
    const Surface s = Surface::openai;
    const BodyFormat json = BodyFormat::json;

    // Not compressed at all.
    EXPECT_EQ(scan(plain, s, json, ContentEncoding::gzip),
              (Scan{"malformed", "none", "compressed body is corrupt (gzip: incorrect header check)"}));
    // Plain JSON declared deflate: '{' is no zlib header, so it is read as raw
    // deflate, where its bits happen to start a fixed-Huffman block: garbage
    // comes out, which is no JSON.
    EXPECT_EQ(scan(plain, s, json, ContentEncoding::deflate),
              (Scan{"malformed", "none", "response body is invalid JSON at byte 0: unexpected byte 0xe5"}));

    // The gzip trailer: CRC-32 then length.
    std::string bad_crc = gz;
    bad_crc[gz.size() - 8] ^= 0x01;
    EXPECT_EQ(scan(bad_crc, s, json, ContentEncoding::gzip, 5),
              (Scan{"malformed", "none", "compressed body is corrupt (gzip: incorrect data check)"}));
    std::string bad_length = gz;
    bad_length[gz.size() - 1] ^= 0x01;
    EXPECT_EQ(scan(bad_length, s, json, ContentEncoding::gzip, 5),
              (Scan{"malformed", "none", "compressed body is corrupt (gzip: incorrect length check)"}));
    // zlib's Adler-32.
    std::string zl = compress(plain, Wrap::zlib);
    zl.back() ^= 0x01;
    EXPECT_EQ(scan(zl, s, json, ContentEncoding::deflate),
              (Scan{"malformed", "none", "compressed body is corrupt (deflate: incorrect data check)"}));

    // Any single-bit change after the 10-byte gzip header is caught.
    for (std::size_t at = 10; at < gz.size(); ++at) {
        std::string flipped = gz;
        flipped[at] ^= 0x01;
        const Scan got = scan(flipped, s, json, ContentEncoding::gzip, 64);
        EXPECT_EQ(got.state, "malformed") << "byte " << at;
        EXPECT_EQ(got.usage, "none") << "byte " << at;
    }

    // Random garbage never crashes, and is never found.
    std::mt19937 random(7);
    for (int round = 0; round < 2000; ++round) {
        std::string garbage(random() % 300, '\0');
        for (char &c : garbage) c = static_cast<char>(random());
        for (ContentEncoding e : {ContentEncoding::gzip, ContentEncoding::deflate}) {
            const Scan got = scan(garbage, s, round % 2 ? json : BodyFormat::sse, e, 1 + random() % 50);
            EXPECT_EQ(got.state, "malformed");
        }
    }
}

TEST(Inflate, GzipMembersAndTrailingData) {
    const std::string plain = read_data("streams/openai_chat.sse");
    const std::string expected = "input=93 cached_input=1024 cache_write=0 cache_read=0 output=46";
    // Two gzip members one after another are one body (as gunzip reads them).
    const std::size_t half = plain.size() / 2;
    const std::string members = compress(plain.substr(0, half), Wrap::gzip) + compress(plain.substr(half), Wrap::gzip);
    for (std::size_t piece : {std::size_t(0), std::size_t(1), std::size_t(100)})
        EXPECT_EQ(scan(members, Surface::openai, BodyFormat::sse, ContentEncoding::gzip, piece),
                  (Scan{"found", expected, ""}));
    // ...and the second one cut short ends early.
    EXPECT_EQ(scan(members.substr(0, members.size() - 3), Surface::openai, BodyFormat::sse, ContentEncoding::gzip).error,
              "compressed body ended early");

    // Garbage after the end of the gzip stream.
    const std::string gz = compress(plain, Wrap::gzip);
    const Scan garbage = scan(gz + "garbage", Surface::openai, BodyFormat::sse, ContentEncoding::gzip);
    EXPECT_EQ(garbage.state, "malformed");
    EXPECT_EQ(garbage.error, "compressed body is corrupt (gzip: incorrect header check)");
    EXPECT_EQ(garbage.usage, expected);  // the stream itself was read

    // Anything after the end of a deflate stream.
    for (Wrap wrap : {Wrap::zlib, Wrap::raw}) {
        const std::string z = compress(plain, wrap);
        for (std::size_t piece : {std::size_t(0), std::size_t(1)}) {
            const Scan extra = scan(z + "x", Surface::openai, BodyFormat::sse, ContentEncoding::deflate, piece);
            EXPECT_EQ(extra.state, "malformed");
            EXPECT_EQ(extra.error, "compressed body has data after its end (deflate)");
            EXPECT_EQ(extra.usage, expected);
        }
    }
}

TEST(Inflate, DeflateFirstBytesAndPresetDictionary) {
    // One byte of a deflate body: not even enough to tell zlib from raw.
    EXPECT_EQ(scan("x", Surface::openai, BodyFormat::json, ContentEncoding::deflate),
              (Scan{"malformed", "none", "compressed body ended early"}));
    // A zlib stream that needs a preset dictionary cannot be read.
    Compressor c(Wrap::zlib);
    const char dictionary[] = "prompt_tokens completion_tokens usage";
    ASSERT_EQ(deflateSetDictionary(&c.stream(), reinterpret_cast<const Bytef *>(dictionary), sizeof dictionary - 1),
              Z_OK);
    std::string with_dictionary = c.push(R"({"usage":{"prompt_tokens":1,"completion_tokens":2}})");
    with_dictionary += c.end();
    EXPECT_EQ(scan(with_dictionary, Surface::openai, BodyFormat::json, ContentEncoding::deflate),
              (Scan{"malformed", "none", "compressed body is corrupt (deflate: needs a preset dictionary)"}));
    EXPECT_EQ(scan(with_dictionary, Surface::openai, BodyFormat::json, ContentEncoding::gzip).error,
              "compressed body is corrupt (gzip: needs a preset dictionary)");
}

TEST(Inflate, InnerErrorsStillReported) {
    // A compressed body that inflates fine but holds broken JSON / SSE.
    EXPECT_EQ(scan(compress("{\"usage\":", Wrap::gzip), Surface::openai, BodyFormat::json, ContentEncoding::gzip),
              (Scan{"malformed", "none", "response ended inside the JSON body"}));
    EXPECT_EQ(scan(compress("<html>", Wrap::gzip), Surface::openai, BodyFormat::json, ContentEncoding::gzip),
              (Scan{"malformed", "none", "response body is invalid JSON at byte 0: unexpected '<'"}));
    EXPECT_EQ(scan(compress("data: {\"type\":\"message_start\"}\n\n", Wrap::raw), Surface::anthropic,
                   BodyFormat::sse, ContentEncoding::deflate),
              (Scan{"malformed", "none", "stream ended before its final event"}));
}

// ---------------------------------------------------------------------------
// 40 MB inflated, from a few KB to many MB compressed: the memory stays bounded.

TEST(InflateMemory, FortyMegabytesInflatedStayBounded) {
    const std::string event =
        R"(data: {"type":"response.output_text.delta","sequence_number":5,"item_id":"msg_1","output_index":0,)"
        R"("content_index":0,"delta":"some text \"usage\":{\"input_tokens\":1}"})"
        "\n\n";
    std::mt19937 random(11);
    // Repetitive content (a compression bomb of sorts: 290 KB become 40 MB)
    // as raw deflate, random-ish content (22 MB compressed) as gzip.
    for (Wrap wrap : {Wrap::gzip, Wrap::raw}) {
        {
            const bool noisy = wrap == Wrap::gzip;
            const ContentEncoding encoding = wrap == Wrap::gzip ? ContentEncoding::gzip : ContentEncoding::deflate;
            UsageScanner scanner(Surface::openai, BodyFormat::sse, encoding);
            Compressor compressor(wrap, 1);
            std::string pending;
            std::size_t compressed = 0, peak = 0;
            auto feed = [&](const std::string &bytes, bool all) {
                pending += bytes;
                while (pending.size() >= 65536 || (all && !pending.empty())) {
                    const std::size_t n = std::min<std::size_t>(65536, pending.size());
                    scanner.feed(std::string_view(pending).substr(0, n));
                    compressed += n;
                    pending.erase(0, n);
                    peak = std::max(peak, scanner.memory_held());
                    ASSERT_LE(scanner.memory_held(), UsageScanner::kMaxMemory);
                }
            };
            feed(compressor.push("event: response.created\ndata: {\"type\":\"response.created\",\"response\":"
                                 "{\"usage\":null}}\n\n"),
                 false);
            std::size_t plain = 0;
            std::string noise_event;
            while (plain < (40u << 20)) {
                if (noisy) {
                    noise_event = "data: {\"type\":\"response.output_text.delta\",\"delta\":\"";
                    for (int i = 0; i < 200; ++i) noise_event += static_cast<char>('a' + random() % 26);
                    noise_event += "\"}\n\n";
                    feed(compressor.push(noise_event), false);
                    plain += noise_event.size();
                } else {
                    feed(compressor.push(event), false);
                    plain += event.size();
                }
            }
            std::string last = compressor.push(
                "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{"
                "\"output\":[],\"usage\":{\"input_tokens\":700,\"input_tokens_details\":"
                "{\"cached_tokens\":600},\"output_tokens\":250000,\"total_tokens\":250700}}}\n\n");
            last += compressor.end();
            feed(last, true);
            scanner.finish();
            EXPECT_EQ(scanner.state(), State::found) << scanner.error();
            EXPECT_EQ(describe(scanner.usage()), "input=100 cached_input=600 cache_write=0 cache_read=0 output=250000");
            EXPECT_LE(peak, UsageScanner::kMaxMemory);
            std::printf("[ memory   ] %s %s: %zu bytes inflated from %zu, peak %zu bytes held\n",
                        wrap == Wrap::gzip ? "gzip" : "raw deflate", noisy ? "noisy" : "repetitive", plain,
                        compressed, peak);
        }
    }
}
