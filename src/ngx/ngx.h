// The NGINX headers, wrapped for C++ once.
#pragma once

extern "C" {
#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_http.h>
}

static_assert(__cplusplus >= 201703L, "spend-cap needs C++17");
