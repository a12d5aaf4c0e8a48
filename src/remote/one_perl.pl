# The one perl of a round trip (Debian's perl-base, on every Debian host; no
# modules: each costs milliseconds to load), read from stdin: each program
# a host starts costs it ~2 ms of CPU (the loader, perl's start), on every
# host at once.
#
# Given `NL FILES LINKS PATH...` (snapshot.sh's send: the first NL paths
# are links), it prints what stat, cat and readlink would of them and the
# snapshot's end line, framed by the token in its environment (which only
# its user may read, not on its command line, which every user may: a file
# that knew it could end its content early). SIGPIPE, which the lock's
# shell ignores, ends it as a write error ends cat: a reader gone must not
# leave it reading (a link swapped to /dev/zero) under the lock.
#
# Then it runs the probes written as `exec perl - WORD... <<'END'`, read
# after __DATA__ (for each a line `INDEX LENGTH...`, the bytes of its
# program and then of each argument, then those bytes), each in a child
# forked from this perl where it started a perl of its own. A child starts
# as that perl would have: package main, no lexicals and no pragmas in
# scope, $0 '-', the probe's arguments in @ARGV, $^T now, $? 0, the signal
# dispositions this perl was given, stdin at its end, stdout and stderr on
# one pipe, and its program's lines numbered as `-`'s. Each says `PROBE
# INDEX STATUS TAIL` as probes.sh's `tell` does: its exit status as a shell
# gives it (128 + the signal that ended it), the last 2000 bytes of its
# output in base64.
package SentryProvision;

# Called first, so that the program it compiles sees no lexical of this
# one's, and @_ empty as at a file's top.
sub run { eval ${ \shift } }

# Base64 by pack's uuencoding, without MIME::Base64.
sub base64 {
    my ($bytes) = @_;
    my $text = join '', map { substr $_, 1 } split /\n/, pack 'u', $bytes;
    $text =~ tr|` -_|AA-Za-z0-9+/|;
    my $padding = (3 - length($bytes) % 3) % 3;
    substr($text, -$padding) = '=' x $padding if $padding;
    return $text;
}

my $token = delete $ENV{token};
if (@ARGV) {
    local $SIG{PIPE} = 'DEFAULT';
    my ($nl, $files, $links, @paths) = @ARGV;
    my @links = splice @paths, 0, $nl;
    my (%user, %group);
    binmode STDOUT;
    if ($files ne '') {
        print "FILES$files\n";
        for (@paths) {
            my @meta = stat $_ or do { warn "stat: cannot stat $_: $!\n"; next };
            $user{$meta[4]} //= getpwuid($meta[4]) // 'UNKNOWN';
            $group{$meta[5]} //= getgrgid($meta[5]) // 'UNKNOWN';
            printf "META %o %s %s %d\n", $meta[2] & 07777, $user{$meta[4]}, $group{$meta[5]}, $meta[7];
        }
        print "CONTENT $token\n";
        for (@paths) {
            open my $file, '<', $_ or do { warn "cat: $_: $!\n"; next };
            binmode $file;
            while (read $file, my $chunk, 65536) { print $chunk }
        }
        print "\nCONTENT-END $token\n";
    }
    if ($links ne '') {
        print "LINKS$links\n";
        for (@links) { my $target = readlink $_; defined $target ? print "$target\0" : warn "readlink: $_: $!\n" }
        print "\nLINKS-END $token\n";
    }
    print "END $token\n";
}

binmode DATA;
my @probes;
while (defined(my $header = <DATA>)) {
    my ($index, @lengths) = split ' ', $header;
    next unless defined $index;
    my @texts = map { my $text = ''; read(DATA, $text, $_) == $_ or die "probes: the text of probe $index is cut short\n"; $text } @lengths;
    push @probes, [$index, @texts];
}
close DATA;

# The next probe, then the rest (a tail call, not a loop: a probe's `next`,
# `last` or `redo` outside a loop of its own must find none, as in a perl of
# its own).
sub run_probes {
    my $probe = shift @probes or return;
    my ($index, $program, @arguments) = @$probe;
    my ($output, $input);
    pipe($output, $input) or do { print "PROBE $index 2 ", base64("cannot make a pipe: $!"), "\n"; goto &run_probes };
    # fork flushes STDOUT first: no line is printed twice.
    my $child = fork;
    if (!defined $child) {
        print "PROBE $index 2 ", base64("cannot fork: $!"), "\n";
        goto &run_probes;
    }
    if (!$child) {
        close $output;
        open(STDOUT, '>&', $input) && open(STDERR, '>&', $input) && open(STDIN, '<', '/dev/null') or exit 2;
        close $input;
        @ARGV = @arguments;
        ($^T, $!, $?) = (time, 0, 0);
        our ($running, $finished) = (0, 0);
        # After the program, a line that says it ran to its end: a `return`
        # at its top level ends a string eval where it is an error in a
        # perl of its own. It follows a `;` (the last statement may have
        # none) and POD (the program may end in some), each line ending in
        # a word the program does not hold, so that none ends a
        # here-document or a format it leaves open.
        my $mark = 'SP_END_' . join '', map { int rand 10 } 1 .. 16;
        $mark .= 'X' while index($program, $mark) >= 0;
        run("package main; \$SentryProvision::running = 1;\n#line 1 \"-\"\n$program; # $mark\n=pod $mark\n=cut $mark\n\$SentryProvision::finished = 1; # $mark\n");
        exit 0 if $@ eq '' && $finished;
        # As perl ends: on a program that does not compile, with 255; on a
        # die (a failed BEGIN or use among them), with errno (as the die
        # left it: printing may change it), else the last child's status,
        # else 255.
        my $errno = $! + 0;
        ($\, $,) = (undef, undef);
        print STDERR $@ eq '' ? "Can't return outside a subroutine (at the probe's top level)\n" : $@;
        if (!$running && $@ !~ /^BEGIN failed--compilation aborted/m) {
            print STDERR "Execution of - aborted due to compilation errors.\n";
            exit 255;
        }
        exit($errno || ($? >> 8) || 255);
    }
    close $input;
    my $said = do { local $/; <$output> } // '';
    close $output;
    waitpid $child, 0;
    my $status = $? & 127 ? 128 + ($? & 127) : $? >> 8;
    # As the shell's $(...) keeps it: no NUL bytes, no newlines at the end.
    $said =~ tr/\0//d;
    $said =~ s/\n+\z//;
    $said = substr $said, -2000 if length $said > 2000;
    print "PROBE $index $status ", ($said eq '' ? '' : base64($said)), "\n";
    goto &run_probes;
}
run_probes();
__DATA__
