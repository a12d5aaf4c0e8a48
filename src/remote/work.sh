trap '' HUP PIPE
sp_umask=$(umask); umask 077
sh() { ( trap - HUP PIPE; umask "$sp_umask"; exec sh "$@" 8>&- ); }
sp_owner=""
{ command exec 8>>"$state/lock.work"; } 2>/dev/null && flock -s 8 && { read -r sp_owner <"$state/lock.owner"; } 2>/dev/null
if [ "$sp_owner" != "$owner" ]; then echo "this run no longer holds the host's lock ($state/lock): nothing was done" >&2; exit 95; fi
