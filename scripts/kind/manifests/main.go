// Command manifests prints a manifest that `kind build node-image` writes
// into its node images, evaluated from kind's own source, so that a node image
// built without `kind build node-image` (scripts/kind-node-image.sh) carries
// exactly what kind's would:
//
//	go run . storage KIND_MODULE_DIR    the default StorageClass (local-path-provisioner)
//
// The manifests are unexported string constants of kind's nodeimage package;
// its constant files import nothing, so go/types evaluates them alone.
package main

import (
	"fmt"
	"go/ast"
	"go/constant"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"os"
	"path/filepath"
)

var manifests = map[string]struct{ file, name string }{
	"storage": {"const_storage.go", "defaultStorageManifest"},
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "manifests:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("usage: manifests storage KIND_MODULE_DIR")
	}
	m, ok := manifests[args[0]]
	if !ok {
		return fmt.Errorf("unknown manifest %q", args[0])
	}
	fset := token.NewFileSet()
	file, err := parser.ParseFile(fset, filepath.Join(args[1], "pkg/build/nodeimage", m.file), nil, 0)
	if err != nil {
		return err
	}
	conf := types.Config{Importer: importer.Default()}
	pkg, err := conf.Check("nodeimage", fset, []*ast.File{file}, nil)
	if err != nil {
		return err
	}
	c, ok := pkg.Scope().Lookup(m.name).(*types.Const)
	if !ok || c.Val().Kind() != constant.String {
		return fmt.Errorf("%s: no string constant %s", m.file, m.name)
	}
	_, err = fmt.Print(constant.StringVal(c.Val()))
	return err
}
