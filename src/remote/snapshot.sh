# Facts, read by shell builtins from /proc and /etc where they can be: on a
# converged host the processes a run starts are most of what it costs.
cpus='' euid=''
while read -r key first second _; do
    case $key in Cpus_allowed_list:) cpus=$first ;; Uid:) euid=$second ;; esac
done 2>/dev/null </proc/self/status
count=0 IFS=,
for range in $cpus; do
    case $range in
        *[!0-9-]* | '') count=0; break ;;
        *-*) count=$((count + ${range#*-} - ${range%-*} + 1)) ;;
        *) count=$((count + 1)) ;;
    esac
done
unset IFS
[ "$count" -gt 0 ] || count=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)
printf 'FACT cpus %s\n' "$count"
while read -r key value _; do [ "$key" = MemTotal: ] && printf 'FACT memory_kb %s\n' "$value" && break; done </proc/meminfo
os_id='' os_version=''
while IFS='=' read -r key value; do
    value=${value#[\"\']} value=${value%[\"\']}
    case $key in ID) os_id=$value ;; VERSION_ID) os_version=$value ;; esac
done 2>/dev/null </etc/os-release
printf 'FACT os_id %s\nFACT os_version %s\n' "${os_id:-unknown}" "$os_version"
{ read -r name </proc/sys/kernel/hostname || name=$(hostname); } 2>/dev/null; printf 'FACT hostname %s\n' "$name"
user=
[ -z "$euid" ] || while IFS=: read -r login _ id _; do
    [ "$id" = "$euid" ] && user=$login && break
done 2>/dev/null </etc/passwd
printf 'FACT user %s\n' "${user:-$(id -un)}"
if [ -d /run/systemd/system ]; then echo 'FACT service_manager systemd'; else echo 'FACT service_manager none'; fi
tools() { for tool do command -v "$tool" >/dev/null 2>&1 && echo "TOOL $tool"; done; }

# Files to read go in the positional parameters, links at the front: one
# stat, one cat and one readlink read them all.
# kind I: what path I ($p) is; 0 for a file to read, 1 for a link.
kind() {
    if [ -L "$p" ]; then links=" $1$links" nl=$((nl + 1)); return 1
    elif [ -f "$p" ]; then if [ -r "$p" ]; then files="$files $1"; return 0; else echo "ERROR $1"; fi
    elif [ -d "$p" ]; then echo "OTHER $1 directory"
    elif [ -e "$p" ]; then echo "OTHER $1 special-file"
    else echo "MISSING $1"; fi
    return 2
}
# found I: what pattern I found ($f), read through a link; 1 for a link.
found() {
    [ -f "$f" ] && [ -r "$f" ] || return 2
    case $f in *'
'*) return 2 ;; esac
    printf 'FOUND %s %s\n' "$1" "$f"; files="$files f$nf"
    if [ -L "$f" ]; then links=" f$nf$links" nl=$((nl + 1)) nf=$((nf + 1)); return 1; fi
    nf=$((nf + 1))
}
guard() { if sh -c '. /dev/fd/3' >/dev/null 2>&1 </dev/null; then echo "GUARD $1"; fi; }
# send FILE...: the first $nl are links. One perl where the host has one
# (one_perl.pl, on send's stdin) prints what stat, cat and readlink would,
# the end line, and what the Perl probes of the pass say ($perl_probes,
# their indexes): each process started costs a host a millisecond or more.
# The token goes in perl's environment (see one_perl.pl).
send() {
    [ -f "$pending" ] && [ -r "$pending" ] && set -- "$@" "$pending" && files="$files pending"
    [ -f "$applied" ] && [ -r "$applied" ] && set -- "$@" "$applied" && files="$files applied"
    [ -f "$state/key" ] && [ -r "$state/key" ] && set -- "$@" "$state/key" && files="$files key"
    if [ -n "$files$links$perl_probes" ] && command -v perl >/dev/null 2>&1; then
        token="$token" perl - "$nl" "$files" "$links" "$@"
    else
        [ -z "$files" ] || send_files "$@"
        [ -z "$links" ] || send_links "$@"
        echo "END $token"
        # shellcheck disable=SC2086 # indexes, split as words
        [ -z "$perl_probes" ] || probes_in_one_perl $perl_probes
    fi
}
send_files() {
    shift "$nl"
    echo "FILES$files"
    stat -L -c 'META %a %U %G %s' -- "$@"
    echo "CONTENT $token"
    cat -- "$@"
    printf '\nCONTENT-END %s\n' "$token"
}
send_links() {
    k=$# j=0
    for link do [ "$j" -lt "$nl" ] && set -- "$@" "$link"; j=$((j + 1)); done
    shift "$k"
    echo "LINKS$links"
    readlink -z -- "$@"
    printf '\nLINKS-END %s\n' "$token"
}
set --; files='' links='' nl=0 nf=0 perl_probes=''
