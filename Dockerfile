# spend-cap on Debian 12: Debian's nginx with the module, the example conf and policy,
# and a local Redis for a single-node demo. For a fleet, point spend_cap_redis in
# /etc/spend-cap/nginx.conf at the Redis all nodes share.
#
#   docker build -t spend-cap .
#   docker run --rm -p 8080:8080 spend-cap
#
# The build is scripts/build.sh, exactly as on a host (against Debian's nginx-dev).
# t/integration/test_dockerfile.py checks this file (no image is built there).
FROM debian:12.11

ARG DEBIAN_FRONTEND=noninteractive
WORKDIR /src/spend-cap
COPY . .

RUN ./scripts/build.sh \
 && apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends nginx redis-server ca-certificates libdate-tz3 tzdata \
 && install -D -m 0644 build/ngx_http_spend_cap_module.so \
        /usr/lib/nginx/modules/ngx_http_spend_cap_module.so \
 && mkdir -p /etc/spend-cap \
 && cp conf/nginx.conf conf/policy.yaml /etc/spend-cap/ \
 && sed -i 's/listen 127\.0\.0\.1:8080;/listen 8080;/' /etc/spend-cap/nginx.conf \
 && ln -sf /dev/stdout /var/log/nginx/access.log \
 && ln -sf /dev/stderr /var/log/nginx/error.log \
 && nginx -t -c /etc/spend-cap/nginx.conf \
 && rm -rf /var/lib/apt/lists/*

EXPOSE 8080
# Runs as root: NGINX's master process, as in Debian's nginx service (its workers run
# as nobody, NGINX's default user: conf/nginx.conf has no user directive); Redis is a
# loopback-only demo instance.
CMD ["sh", "-c", "redis-server --bind 127.0.0.1 --dir /var/lib/redis --daemonize yes && exec nginx -c /etc/spend-cap/nginx.conf -g 'daemon off;'"]
