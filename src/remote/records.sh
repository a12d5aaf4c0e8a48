# stage_record NAME FILE CONTENT WHAT FAIL: CONTENT, the next version of the
# state file FILE, written beside it as $state/.NAME.$$ for place_record.
stage_record() {
    [ -d "$state" ] || mkdir -p -- "$state" 2>"$errlog" || "$5" record "cannot create $state"
    { printf '%s' "$3" >|"$state/.$1.$$"; } 2>|"$errlog" || "$5" record "cannot record $4 in $2" "$(full "$state")"
}
# place_record NAME FILE WHAT POINT FAIL
place_record() {
    mv -f -- "$state/.$1.$$" "$2" 2>"$errlog" || "$5" record "cannot record $3 in $2" "$(full "$state")"
    crash "$4"
}
