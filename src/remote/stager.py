import binascii, errno, grp, os, pwd, sys

def folder(path):
    # From / one part at a time: a link is followed only where no one but
    # root can change the folder it is in.
    fd = os.open(b"/", os.O_RDONLY | os.O_DIRECTORY)
    for part in path.split(b"/"):
        if not part:
            continue
        info = os.fstat(fd)
        others_write = info.st_uid != 0 or info.st_mode & 0o022
        try:
            child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | (os.O_NOFOLLOW if others_write else 0), dir_fd=fd)
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.ENOTDIR) and others_write:
                raise OSError(error.errno, "%s is a link in a folder others can write to: not followed" % part.decode(errors="replace"))
            raise
        finally:
            os.close(fd)
        fd = child
    return fd

def private(path, name):
    # The run's own folder beside `path` (made 0700 here, or made by an
    # earlier call of this run): no one else can add, swap or remove what
    # is in it, wherever someone who can write the folder moves it.
    where = folder(os.path.dirname(path))
    try:
        try:
            os.mkdir(name, 0o700, dir_fd=where)
        except FileExistsError:
            pass
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=where)
    finally:
        os.close(where)
    info = os.fstat(fd)
    if info.st_uid != os.geteuid() or info.st_mode & 0o077:
        os.close(fd)
        raise OSError(errno.EEXIST, "%s was made by someone else: refused" % name)
    return fd

def failed(index, path, error):
    why = error.strerror if isinstance(error, OSError) else "no such user or group %s" % error
    message = "cannot write %s: %s" % (path.decode(errors="replace"), why)
    print("FAIL file:%d %s" % (index, binascii.b2a_base64(message.encode(), newline=False).decode()), flush=True)
    sys.exit(1)

def stage(index, path, name, mode, owner, group, content):
    path = binascii.a2b_base64(path)
    try:
        uid = -1 if owner is None else pwd.getpwnam(binascii.a2b_base64(owner).decode()).pw_uid
        gid = -1 if group is None else grp.getgrnam(binascii.a2b_base64(group).decode()).gr_gid
        where = private(path, name)
        try:
            fd = os.open("new.%d" % index, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=where)
        finally:
            os.close(where)
        try:
            data = memoryview(binascii.a2b_base64(content))
            while data:
                data = data[os.write(fd, data):]
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
    except (OSError, KeyError) as error:
        failed(index, path, error)

def link(index, path, name, target):
    path = binascii.a2b_base64(path)
    try:
        where = private(path, name)
        try:
            os.symlink(binascii.a2b_base64(target), "new.%d" % index, dir_fd=where)
        finally:
            os.close(where)
    except OSError as error:
        failed(index, path, error)

def keep(index, path, name):
    # Only the run's folder, for the previous entry of a path it removes.
    path = binascii.a2b_base64(path)
    try:
        os.close(private(path, name))
    except OSError as error:
        failed(index, path, error)
