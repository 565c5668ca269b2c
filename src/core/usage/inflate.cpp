// The usage scanner's first stage for compressed bodies: zlib inflates gzip or
// deflate (zlib-wrapped or raw) into the body's bytes, in 16 KiB steps.
#include "usage/scanner_impl.h"

#include <new>

namespace spendcap {

namespace {

constexpr std::size_t kInflateBuffer = 16 * 1024;
constexpr std::size_t kInflateSlice = std::size_t(1) << 30;  // z_stream counts in uInt

// A zlib header (RFC 1950): deflate method, window <= 32 KiB, check bits.
bool is_zlib_header(unsigned char cmf, unsigned char flg) {
    return (cmf & 0x0f) == 8 && (cmf >> 4) <= 7 && ((unsigned(cmf) << 8) | flg) % 31 == 0;
}

}  // namespace

voidpf UsageScanner::Impl::z_alloc(voidpf opaque, uInt items, uInt size) {
    constexpr std::size_t header = 16;  // keeps the block 16-byte aligned
    const std::size_t bytes = std::size_t(items) * std::size_t(size);
    void *block = ::operator new(bytes + header, std::nothrow);
    if (!block) return Z_NULL;
    *static_cast<std::size_t *>(block) = bytes;
    static_cast<Impl *>(opaque)->zlib_bytes += bytes;
    return static_cast<unsigned char *>(block) + header;
}

void UsageScanner::Impl::z_free(voidpf opaque, voidpf address) {
    if (!address) return;
    unsigned char *block = static_cast<unsigned char *>(address) - 16;
    static_cast<Impl *>(opaque)->zlib_bytes -= *reinterpret_cast<std::size_t *>(block);
    ::operator delete(block);
}

bool UsageScanner::Impl::start_inflate(int window_bits) {
    z.zalloc = &Impl::z_alloc;
    z.zfree = &Impl::z_free;
    z.opaque = this;
    z.next_in = Z_NULL;
    z.avail_in = 0;
    const int rc = inflateInit2(&z, window_bits);
    if (rc != Z_OK) {
        set_malformed(rc == Z_MEM_ERROR ? kOutOfMemory : "could not start inflating the response body");
        return false;
    }
    z_started = true;
    return true;
}

void UsageScanner::Impl::feed_compressed(std::string_view chunk) {
    const auto *data = reinterpret_cast<const unsigned char *>(chunk.data());
    std::size_t size = chunk.size();
    if (!z_started) {
        if (size == 0) return;
        if (encoding == ContentEncoding::gzip) {
            // 15 + 32: a gzip or zlib header, detected.
            if (!start_inflate(15 + 32)) return;
        } else {
            // "deflate" is meant to be zlib-wrapped (RFC 9110), but some
            // servers send raw deflate: the first two bytes tell.
            while (sniffed < 2 && size > 0) {
                sniff[sniffed++] = *data++;
                --size;
            }
            if (sniffed < 2) return;
            if (!start_inflate(is_zlib_header(sniff[0], sniff[1]) ? 15 : -15)) return;
            inflate_bytes(sniff, 2);
        }
    }
    inflate_bytes(data, size);
}

void UsageScanner::Impl::inflate_bytes(const unsigned char *data, std::size_t size) {
    unsigned char out[kInflateBuffer];
    while (size > 0 && state == State::reading) {
        const std::size_t take = size < kInflateSlice ? size : kInflateSlice;
        z.next_in = const_cast<Bytef *>(data);
        z.avail_in = static_cast<uInt>(take);
        data += take;
        size -= take;
        inflate_slice(out);
    }
}

// Inflates z.next_in until it is used up, passing the output on.
void UsageScanner::Impl::inflate_slice(unsigned char *out) {
    const char *kind = encoding == ContentEncoding::gzip ? "gzip" : "deflate";
    while (state == State::reading) {
        if (z_ended) {
            if (z.avail_in == 0) return;
            if (encoding != ContentEncoding::gzip) {
                set_malformed("compressed body has data after its end (deflate)");
                return;
            }
            // gzip allows several members one after another (as gunzip reads them).
            if (inflateReset(&z) != Z_OK) {
                set_malformed("could not restart inflating the response body");
                return;
            }
            z_ended = false;
        }
        z.next_out = out;
        z.avail_out = static_cast<uInt>(kInflateBuffer);
        const uInt in_before = z.avail_in;
        const int rc = inflate(&z, Z_NO_FLUSH);
        if (z.avail_in != in_before) z_pending = true;
        const std::size_t produced = kInflateBuffer - z.avail_out;
        if (produced > 0) {
            feed_plain(std::string_view(reinterpret_cast<const char *>(out), produced));
            if (state != State::reading) return;
        }
        switch (rc) {
        case Z_STREAM_END:
            z_ended = true;
            z_pending = false;
            continue;
        case Z_OK:
            if (z.avail_in == 0 && z.avail_out != 0) return;
            continue;
        case Z_BUF_ERROR:  // no progress possible: the input is used up
            return;
        case Z_NEED_DICT:
            set_malformed(std::string("compressed body is corrupt (") + kind +
                          ": needs a preset dictionary)");
            return;
        case Z_MEM_ERROR:
            set_malformed(kOutOfMemory);
            return;
        default:
            set_malformed(std::string("compressed body is corrupt (") + kind + ": " +
                          (z.msg ? z.msg : "invalid data") + ")");
            return;
        }
    }
}

}  // namespace spendcap
