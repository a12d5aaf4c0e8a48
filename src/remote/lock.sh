trap '' HUP PIPE
if [ -L "$state" ]; then echo "STATEBAD $state is a symbolic link"; exit 96; fi
[ -d "$state" ] || (umask 077; mkdir -p -- "$state") || { echo "STATEBAD cannot create $state"; exit 96; }
[ -O "$state" ] || { echo "STATEBAD $state is not owned by the user the run works as ($(id -un)): another user could plant files there"; exit 96; }
if ! [ -O "$state/.checked" ] || [ -L "$state/.checked" ]; then
    sp_mode=$(stat -c %a -- "$state") || exit 96
    case $sp_mode in
        *[2367]? | *[2367]) echo "STATEBAD $state is writable by its group or by everyone (mode $sp_mode): another user could plant files there"; exit 96 ;;
        700) ;;
        *) chmod 700 -- "$state" || exit 96 ;;
    esac
    (umask 077; : >"$state/.checked") || exit 96
fi
umask 077
exec 9>>"$state/lock" || exit 96
if ! flock -w "$lock_wait" 9; then echo LOCKBUSY; exit 3; fi
printf '%s\n' "$owner" >|"$state/lock.owner" || exit 96
# What a killed run left: removed by one rm, and only when there is some.
n=$#
for dir do set -- "$@" "$dir"/.sentry-provision.*; done
shift "$n"
set -- "$@" "$state"/.pending.* "$state"/.applied.* "$state"/.log.* "$state"/.key.*
for left do if [ -e "$left" ] || [ -L "$left" ]; then rm -rf -- "$@" 2>/dev/null; break; fi; done
[ -s "$state/key" ] || { od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$state/.key.$$" && mv -f -- "$state/.key.$$" "$state/key"; } || exit 96
sh() { ( trap - HUP PIPE; exec sh "$@" 9>&- ); }
# @script@
# Held until the controller closes stdin or says nothing for 10 s. Its
# last word `idle` says it sent no script that changes the host: none of
# the run's holds lock.work, and the wait for them (a flock) is spared.
if command -v bash >/dev/null; then bash -c 'while read -r -t 10 word; do [ "$word" != idle ] || exit 7; done'; else while timeout 10 sh -c 'read -r _' 2>/dev/null; do :; done; fi
[ $? = 7 ] || { { command exec 8>>"$state/lock.work"; } 2>/dev/null && flock -x 8; }
: >|"$state/lock.owner"
exit 0
