PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export LC_ALL=C
b64() { base64 -w0; }
