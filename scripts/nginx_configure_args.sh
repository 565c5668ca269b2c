#!/usr/bin/env bash
# scripts/nginx_configure_args.sh [-0] < "output of nginx -V"
#
# Prints the words of the "configure arguments:" line of `nginx -V`, one per line
# (-0: each followed by a NUL instead), the way a shell would split them, e.g.
#   --with-cc-opt='-g -O2 -fstack-protector-strong' --prefix=/usr/share/nginx
# gives "--with-cc-opt=-g -O2 -fstack-protector-strong" and "--prefix=/usr/share/nginx".
#
# NGINX's configure records an option whose value has a space as --name='value'; this
# parser takes single quotes, double quotes (with \" \\ \$ \` escapes) and backslash
# escapes outside quotes, and never evaluates anything: no expansion, no command
# substitution. An unterminated quote, or no "configure arguments:" line, is an error
# (exit 1). No arguments at all (an NGINX configured without any) prints nothing.
set -euo pipefail

fmt='%s\n'
case "${1:-}" in
    -0) fmt='%s\0' ;;
    "") ;;
    *) echo "usage: $0 [-0] < nginx-V-output" >&2; exit 1 ;;
esac

line=""
found=0
while IFS= read -r l || [ -n "$l" ]; do
    case "$l" in
        "configure arguments:"*) line=${l#configure arguments:}; found=1; break ;;
    esac
done
if [ "$found" != 1 ]; then
    echo "nginx_configure_args.sh: no 'configure arguments:' line in the input" >&2
    exit 1
fi

# shellcheck disable=SC2059
emit() { printf "$fmt" "$1"; }
word=""
inword=0
quote=""   # "", "'" or '"'
i=0
n=${#line}
while [ $i -lt $n ]; do
    c=${line:$i:1}
    i=$((i + 1))
    if [ "$quote" = "'" ]; then
        if [ "$c" = "'" ]; then quote=""; else word+=$c; fi
    elif [ "$quote" = '"' ]; then
        if [ "$c" = '"' ]; then
            quote=""
        elif [ "$c" = '\' ] && [ $i -lt $n ]; then
            d=${line:$i:1}
            case "$d" in
                '"'|'\'|'$'|'`') word+=$d; i=$((i + 1)) ;;
                *) word+=$c ;;
            esac
        else
            word+=$c
        fi
    else
        case "$c" in
            ' '|$'\t')
                if [ $inword = 1 ]; then emit "$word"; word=""; inword=0; fi ;;
            "'"|'"') quote=$c; inword=1 ;;
            '\')
                if [ $i -lt $n ]; then word+=${line:$i:1}; i=$((i + 1)); fi
                inword=1 ;;
            *) word+=$c; inword=1 ;;
        esac
    fi
done
if [ -n "$quote" ]; then
    echo "nginx_configure_args.sh: unterminated $quote quote in: $line" >&2
    exit 1
fi
if [ $inword = 1 ]; then emit "$word"; fi
