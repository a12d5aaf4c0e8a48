# probe I: runs probe I (its text on descriptor 3); most pass silently,
# then no tail and no base64 to start.
probe() {
    out=$(sh -c '. /dev/fd/3' 2>&1 </dev/null); rc=$?
    if [ -z "$out" ]; then echo "PROBE $1 $rc "; else printf 'PROBE %s %s %s\n' "$1" "$rc" "$(printf '%s' "$out" | tail -c 2000 | b64)"; fi
}
