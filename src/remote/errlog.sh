errlog="$state/.log.$$.err"
{ true >"$errlog"; } 2>/dev/null || errlog=$(mktemp) || exit 97
trap 'rm -f "$errlog"' EXIT
