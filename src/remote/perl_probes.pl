# The Perl probes of a drift pass (`exec perl - WORD... <<'END'`), in one
# perl: each runs in a process forked from this one as `perl -` would run
# it, and is told as probes.sh tells a probe. A perl costs a host ~1.5 ms
# of CPU to start, a fork a fraction of that. After __DATA__, per probe: a
# line "INDEX PROGRAM-BYTES WORD-BYTES...", then those bytes.

# Runs $SP_pool::program as `perl -` runs its program, in package main with
# no arguments of this file's and none of its lexicals in sight (this is
# the first sub: none are declared above it).
sub SP_pool::run_program {
    @_ = ();
    package main;
    eval "#line 1 \"-\"\n$SP_pool::program\n;";
    # As perl ends on a die: the message, and errno, or $? >> 8, or 255.
    if ($@ ne '') { print STDERR $@; exit($! + 0 || $? >> 8 || 255) }
    exit 0;
}

package SP_pool;

my @alphabet = ('A' .. 'Z', 'a' .. 'z', 0 .. 9, '+', '/');
sub base64 {
    my $bits = unpack 'B*', shift;
    $bits .= '0' x (-length($bits) % 6);
    my $text = join '', map { $alphabet[oct "0b$_"] } $bits =~ /(.{6})/g;
    return $text . '=' x (-length($text) % 4);
}

# As probes.sh's `tell`: the output without its trailing newlines (as
# $(...) drops them), its last 2000 bytes.
sub tell_probe {
    my ($index, $status, $output) = @_;
    $output =~ s/\n+\z//;
    $output = substr $output, -2000 if length $output > 2000;
    print "PROBE $index $status ", base64($output), "\n";
}

sub run {
    my ($index, @args) = @_;
    my ($read, $write);
    pipe($read, $write) or return tell_probe($index, 126, "cannot make a pipe: $!");
    my $pid = fork // return tell_probe($index, 126, "cannot fork: $!");
    if (!$pid) {
        close $read;
        open STDIN, '<', '/dev/null';
        open STDOUT, '>&', $write;
        open STDERR, '>&', $write;
        close $write;
        # As a perl of its own: its output buffered (this one's is not).
        $| = 0;
        ($0, $^T) = ('-', time);
        @ARGV = @args;
        run_program();
    }
    close $write;
    # What it prints is read whole, as $(...) reads it, keeping the end.
    my $output = '';
    while (sysread $read, $output, 65536, length $output) {
        substr($output, 0, -65536) = '' if length $output > 131072;
    }
    waitpid $pid, 0;
    tell_probe($index, $? & 127 ? 128 + ($? & 127) : $? >> 8, $output);
}

# Descriptor 3 (this program) is no probe's.
if (open my $three, '<&=', 3) { close $three }
binmode DATA;
binmode STDOUT;
# Nothing left in a buffer for a child to print again.
$| = 1;
# The here-document's last newline ends the list.
while (defined(my $head = <DATA>)) {
    last if $head eq "\n";
    my ($index, @lengths) = split ' ', $head;
    my @bytes = map { my $text; read(DATA, $text, $_) == $_ or die "a probe's text is cut short\n"; $text } @lengths;
    $program = shift @bytes;
    run($index, @bytes);
}
