# A failure prints `FAIL <where> <message, base64>` and exits; from the
# first move on (abort), every path of the run is put back first. What the
# run staged goes (run_dirs), unless a path could not be put back.
fail() { [ -n "$sp_stuck" ] || run_dirs; rm -f -- "$state/.pending.$$" "$state/.applied.$$" 2>/dev/null; printf 'FAIL %s %s\n' "$1" "$( { printf '%s: ' "$2"; if [ -n "$3" ]; then printf '%s' "$3"; else cat "$errlog"; fi; } | b64)"; exit 1; }
abort() { undo; fail "$@"; }
# put_back PATH OLD WAS_LINK: a kept entry that is a link where the path was
# not one was swapped by someone who can write the folder: not put back.
put_back() { if [ -n "$2" ]; then ours "${2%/*}" || return 1; if [ -L "$2" ] && [ -z "$3" ]; then return 1; fi; mv -f -T -- "$2" "$1"; else rm -f -- "$1"; fi; }
# ours DIR: the run's own folder, still (no one else can make one of ours).
ours() { [ -d "$1" ] && ! [ -L "$1" ] && [ -O "$1" ]; }
folder() { [ -d "$2" ] || (umask "$sp_umask"; mkdir -p -- "$2") 2>"$errlog" || fail "file:$1" "cannot create folder $2"; }
back_pending() { if [ -z "$sp_stuck" ] && [ -n "$placed_pending" ]; then put_back "$pending" "$old_pending" 2>/dev/null; else rm -f -- "$old_pending"; fi; }
keep_pending() {
    old_pending=""
    if [ -e "$pending" ]; then old_pending="$state/.pending.old.$$"; ln -f -- "$pending" "$old_pending" 2>"$errlog" || fail record "cannot keep the previous record of pending handlers"; fi
}
# place I PATH DIR RUN_DIR HOW: the previous entry kept as RUN_DIR/old.I
# (a hard link), then the new one renamed into place (HOW: put, or backup
# and put), or the path removed (HOW: remove).
place() {
    ours "$4" || abort "file:$1" "$4, the run's own folder, was replaced (someone else can write $3): refused"
    [ -L "$2" ] && sp_links="$sp_links$1 "
    if [ -e "$2" ] || [ -L "$2" ]; then sp_olds="$sp_olds$1 "; ln -P -- "$2" "$4/old.$1" 2>"$errlog" || abort "file:$1" "cannot replace $2" "$(full "$3")"; fi
    case $5 in
        remove) rm -f -- "$2" 2>"$errlog" || abort "file:$1" "cannot remove $2" ;;
        *)
            [ "$5" = put ] || backup "$1" "$2"
            mv -f -T -- "$4/new.$1" "$2" 2>"$errlog" || abort "file:$1" "cannot rename into place" "$(full "$3")" ;;
    esac
    sp_placed="$sp_placed$1 "; crash "file:$1:placed"
}
backup() {
    case $sp_olds in *" $1 "*) ;; *) return 0 ;; esac
    bak="$state/backups/$stamp$2"
    { mkdir -p -- "${bak%/*}" && cp -P -p -- "$2" "$bak"; } 2>"$errlog" || abort "file:$1" "cannot keep a backup" "$(full "$state")"
    printf 'BACKUP %s %s\n' "$1" "$(printf '%s' "$bak" | b64)"
}
# back I PATH RUN_DIR: path I as it was before the run, or STUCK when it
# cannot be (its previous entry then stays in RUN_DIR, for a person).
back() {
    old='' was_link=''
    case $sp_olds in *" $1 "*) old="$3/old.$1" ;; esac
    case $sp_links in *" $1 "*) was_link=1 ;; esac
    case $sp_placed in
        *" $1 "*) put_back "$2" "$old" "$was_link" 2>/dev/null || { echo "STUCK $1"; sp_stuck=1; } ;;
        *) if [ -n "$old" ]; then rm -f -- "$old"; fi ;;
    esac
}
check() { if ! sh -c '. /dev/fd/3' >"$errlog" 2>&1 </dev/null; then abort "check:$1" "$2"; fi; }
step() { sh -c '. /dev/fd/3' >/dev/null 2>"$errlog" </dev/null || abort "command:$1" "exit status $?"; echo "RAN $1"; crash "command:$1"; }
sp_stuck='' placed_pending='' old_pending='' sp_placed=' ' sp_olds=' ' sp_links=' '
