tab='	'
outlog="$state/.log.$$.out"
{ true >"$outlog"; } 2>/dev/null || outlog=$(mktemp) || exit 97
trap 'rm -f "$errlog" "$outlog"' EXIT
# done_with NAME: clears one handler from the pending record, keeping any
# others owed: appends its name between tabs (the record is never
# rewritten), and removes the record once nothing in it is owed.
done_with() {
    [ -f "$pending" ] || return 0
    cleared="
$1
"
    while IFS= read -r name; do case $name in "$tab"*"$tab") name=${name#?}; cleared="$cleared${name%?}
" ;; esac; done < "$pending"
    while IFS= read -r name; do
        case $name in "" | *[[:cntrl:]]*) continue ;; esac
        case $cleared in *"
$name
"*) ;; *) printf '\n\t%s\t\n' "$1" >> "$pending"; return ;; esac
    done < "$pending"
    rm -f -- "$pending"
}
# handler I: runs handler I (its text on descriptor 3).
handler() {
    sh -c '. /dev/fd/3' >"$outlog" 2>"$errlog" </dev/null
    rc=$?; if [ $rc -ne 0 ]; then printf 'HFAIL %s %s %s\n' "$1" "$rc" "$( { tail -c 2000 "$errlog"; tail -c 1000 "$outlog"; } | b64)"; exit 1; fi
    crash "handler:$1:ran"
}
# verify I J WHY: probe J, which says whether handler I took effect.
verify() {
    out=$(sh -c '. /dev/fd/3' 2>&1 </dev/null); rc=$?; printf 'PROBE %s %s %s\n' "$2" "$rc" "$(printf '%s' "$out" | tail -c 2000 | b64)"
    if [ $rc -ne 0 ]; then printf 'HNOEFFECT %s %s %s\n' "$1" "$rc" "$( { printf '%s' "$3"; printf '%s' "$out" | tail -c 2000; } | b64)"; exit 1; fi
}
# handled I NAME: handler I took effect.
handled() { done_with "$2" || true; echo "HOK $1"; }
