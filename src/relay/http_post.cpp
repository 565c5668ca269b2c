#include "relay/http_post.h"

#include <curl/curl.h>

#include <cctype>
#include <memory>

namespace spendcap::relay {
namespace {

std::size_t ignore_body(char *, std::size_t size, std::size_t n, void *) { return size * n; }

std::size_t read_header(char *data, std::size_t size, std::size_t n, void *user) {
    const std::size_t len = size * n;
    std::string line(data, len);
    static const std::string name = "retry-after:";
    if (line.size() > name.size()) {
        std::string head = line.substr(0, name.size());
        for (char &c : head) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (head == name) {
            std::string value = line.substr(name.size());
            while (!value.empty() && std::isspace(static_cast<unsigned char>(value.front()))) value.erase(0, 1);
            while (!value.empty() && std::isspace(static_cast<unsigned char>(value.back()))) value.pop_back();
            static_cast<PostResult *>(user)->retry_after = value;
        }
    }
    return len;
}

}  // namespace

void http_init() { curl_global_init(CURL_GLOBAL_DEFAULT); }

PostResult http_post(const std::string &url, const std::string &body,
                     const std::vector<std::pair<std::string, std::string>> &headers, long timeout_ms) {
    PostResult result;
    std::unique_ptr<CURL, void (*)(CURL *)> curl(curl_easy_init(), curl_easy_cleanup);
    if (!curl) {
        result.error = "curl_easy_init failed";
        return result;
    }
    curl_slist *list = nullptr;
    for (const auto &[name, value] : headers) list = curl_slist_append(list, (name + ": " + value).c_str());
    list = curl_slist_append(list, "Expect:");  // no 100-continue round trip
    std::unique_ptr<curl_slist, void (*)(curl_slist *)> header_list(list, curl_slist_free_all);
    CURL *c = curl.get();
    curl_easy_setopt(c, CURLOPT_URL, url.c_str());
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);  // threads: no SIGALRM for DNS timeouts
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "spend-cap-relay");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, ignore_body);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, read_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &result);
    const CURLcode rc = curl_easy_perform(c);
    if (rc != CURLE_OK) {
        result.error = curl_easy_strerror(rc);
        return result;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &result.status);
    return result;
}

}  // namespace spendcap::relay
