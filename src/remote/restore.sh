fail() { printf 'FAIL %s %s\n' "$1" "$( { printf '%s: ' "$2"; if [ -n "$3" ]; then printf '%s' "$3"; else cat "$errlog"; fi; } | b64)"; exit 1; }
stuck() { printf 'STUCK %s %s\n' "$1" "$( { printf '%s: ' "$2"; cat "$errlog"; } | b64)"; }
ours() { [ -d "$1" ] && ! [ -L "$1" ] && [ -O "$1" ]; }
# put_back I PATH KEPT FOLDER KEPT_TEXT: the entry the install kept, renamed back.
put_back() {
    if ! ours "$4"; then : >"$errlog"; stuck "$1" "the run's own folder was replaced"
    elif ! [ -e "$3" ] && ! [ -L "$3" ]; then : >"$errlog"; stuck "$1" "the previous entry kept by the install ($5) is gone"
    elif mv -f -T -- "$3" "$2" 2>"$errlog"; then echo "BACK $1"
    else stuck "$1" 'cannot put the previous entry back'; fi
}
# remove I PATH: a path that did not exist before the install.
remove() { if rm -f -- "$2" 2>"$errlog"; then echo "BACK $1"; else stuck "$1" 'cannot remove it'; fi; }
