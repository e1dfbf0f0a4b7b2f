package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/difuse/difuse/inode"
)

// The filesystem over HTTP: GET /v1/fs/{path} answers a file's bytes or a
// directory's listing as JSON, PUT /v1/fs/{path} writes a file (or, with a
// trailing slash, makes a directory), DELETE /v1/fs/{path} removes a file
// or an empty directory. Paths are cleaned against the root, so none can
// escape it.

// fsReady makes sure the root directory exists; it runs until it succeeds
// once.
func (n *Node) fsReady(ctx context.Context) error {
	n.fsInit.Lock()
	defer n.fsInit.Unlock()
	if n.fsDone {
		return nil
	}
	if err := n.fs.Init(ctx); err != nil {
		return err
	}
	n.fsDone = true
	return nil
}

// resolve walks a cleaned path from the root (creating the root first if
// it is new) and returns its inode, its parent directory and its last name
// ("" for the root).
func (n *Node) resolve(ctx context.Context, p string) (id, parent inode.ID, name string, err error) {
	if err := n.fsReady(ctx); err != nil {
		return inode.ID{}, inode.ID{}, "", err
	}
	id = inode.Root
	parts := strings.Split(strings.Trim(p, "/"), "/")
	if parts[0] == "" {
		return id, id, "", nil
	}
	for i, part := range parts {
		e, err := n.fs.Lookup(ctx, id, part)
		if err != nil {
			if i == len(parts)-1 && errors.Is(err, syscall.ENOENT) {
				return inode.ID{}, id, part, err // the parent exists
			}
			return inode.ID{}, inode.ID{}, "", err
		}
		parent, id, name = id, e.ID, part
	}
	return id, parent, name, nil
}

// fsPath returns the request's path, cleaned against the root.
func fsPath(r *http.Request) string { return path.Clean("/" + r.PathValue("path")) }

func (n *Node) handleFSGet(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := n.requestContext(r)
	defer cancel()
	id, _, _, err := n.resolve(ctx, fsPath(r))
	if err != nil {
		writeFSError(w, err)
		return
	}
	a, _, err := n.fs.GetAttr(ctx, id)
	if err != nil {
		writeFSError(w, err)
		return
	}
	switch a.Type {
	case inode.TypeDir:
		list, err := n.fs.Readdir(ctx, id)
		if err != nil {
			writeFSError(w, err)
			return
		}
		type item struct {
			Name string `json:"name"`
			Type string `json:"type"`
		}
		out := make([]item, len(list))
		for i, e := range list {
			out[i] = item{e.Name, typeName(e.Type)}
		}
		writeJSON(w, http.StatusOK, out)
	case inode.TypeSymlink:
		writeJSON(w, http.StatusOK, map[string]string{"symlink": a.Target})
	default:
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatUint(a.Size, 10))
		w.Header().Set("Last-Modified", time.Unix(0, a.Mtime).UTC().Format(http.TimeFormat))
		if r.Method == http.MethodHead {
			return
		}
		buf := make([]byte, min(1<<20, a.Size))
		for off := int64(0); uint64(off) < a.Size; {
			got, err := n.fs.ReadAt(ctx, id, a, buf, off)
			if got > 0 {
				if _, werr := w.Write(buf[:got]); werr != nil {
					return
				}
				off += int64(got)
			}
			if err != nil {
				if !errors.Is(err, io.EOF) {
					n.log.Warn("read through HTTP failed", "path", fsPath(r), "err", err)
				}
				return
			}
		}
	}
}

func typeName(t inode.Type) string {
	switch t {
	case inode.TypeDir:
		return "dir"
	case inode.TypeSymlink:
		return "symlink"
	}
	return "file"
}

func (n *Node) handleFSPut(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := n.requestContext(r)
	defer cancel()
	p := fsPath(r)
	if p == "/" {
		writeError(w, http.StatusBadRequest, "the root cannot be written")
		return
	}
	id, parent, name, err := n.resolve(ctx, p)
	isDir := strings.HasSuffix(r.PathValue("path"), "/")
	switch {
	case errors.Is(err, syscall.ENOENT) && name != "":
		typ := inode.TypeFile
		if isDir {
			typ = inode.TypeDir
		}
		id, _, err = n.fs.Create(ctx, parent, name, inode.NewAttr{Type: typ, Mode: 0o755})
		if err != nil {
			writeFSError(w, err)
			return
		}
		if isDir {
			writeJSON(w, http.StatusCreated, map[string]string{"path": p})
			return
		}
	case err != nil:
		writeFSError(w, err)
		return
	case isDir:
		writeJSON(w, http.StatusOK, map[string]string{"path": p}) // it exists
		return
	default:
		zero := uint64(0)
		if _, err := n.fs.Setattr(ctx, id, inode.SetAttr{Size: &zero}); err != nil {
			writeFSError(w, err)
			return
		}
	}
	// Stream the body in pieces, committing each. The pieces grow to 8 MiB
	// as the bytes come, so a request costs what it sends.
	wr := n.fs.NewWriter(id)
	buf := make([]byte, 64<<10)
	var size int64
	for {
		got, rerr := io.ReadFull(r.Body, buf)
		if got > 0 {
			wr.WriteAt(buf[:got], size)
			size += int64(got)
			if _, err := wr.Flush(ctx); err != nil {
				writeFSError(w, err)
				return
			}
		}
		if got == len(buf) && len(buf) < 8<<20 {
			buf = make([]byte, 2*len(buf))
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			writeError(w, http.StatusBadRequest, "reading the body: "+rerr.Error())
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"path": p, "size": size})
}

func (n *Node) handleFSDelete(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := n.requestContext(r)
	defer cancel()
	p := fsPath(r)
	if p == "/" {
		writeError(w, http.StatusBadRequest, "the root cannot be removed")
		return
	}
	id, parent, name, err := n.resolve(ctx, p)
	if err != nil {
		writeFSError(w, err)
		return
	}
	a, _, err := n.fs.GetAttr(ctx, id)
	if err != nil {
		writeFSError(w, err)
		return
	}
	if a.Type == inode.TypeDir {
		err = n.fs.Rmdir(ctx, parent, name)
	} else {
		err = n.fs.Unlink(ctx, parent, name)
	}
	if err != nil {
		writeFSError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// writeFSError answers a failed filesystem request by its errno.
func writeFSError(w http.ResponseWriter, err error) {
	code := http.StatusServiceUnavailable
	var e syscall.Errno
	if errors.As(err, &e) {
		switch e {
		case syscall.ENOENT:
			code = http.StatusNotFound
		case syscall.EEXIST, syscall.ENOTEMPTY, syscall.EAGAIN:
			code = http.StatusConflict
		case syscall.ENOTDIR, syscall.EISDIR, syscall.EINVAL, syscall.ENAMETOOLONG:
			code = http.StatusBadRequest
		}
	}
	writeError(w, code, fmt.Sprint(err))
}
