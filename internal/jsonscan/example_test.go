package jsonscan_test

import (
	"encoding/json"
	"fmt"

	"github.com/weftnet/weft/internal/jsonscan"
)

type Port struct {
	Name   string   `json:"name"`
	Number uint32   `json:"number"`
	Tags   []string `json:"tags"`
}

var portFields = []string{"name", "number", "tags"}

// portDecoder is a Scanner with the types of a Port.
type portDecoder struct {
	jsonscan.Scanner
}

func (d *portDecoder) tags(v *[]string) bool {
	*v = []string{} // an empty array gives empty, not nil
	return d.Array(func() bool {
		var s string
		ok := d.String(&s)
		*v = append(*v, s)
		return ok
	})
}

// decodePort decodes b in one pass when it is in the plain form, and
// with json.Unmarshal otherwise.
func decodePort(b []byte) (Port, string, error) {
	var p Port
	var d portDecoder
	d.Reset(b)
	ok := d.Document(func(key []byte) bool {
		switch string(key) {
		case "name":
			return d.Once(0) && d.String(&p.Name)
		case "number":
			return d.Once(1) && d.Uint32(&p.Number)
		case "tags":
			return d.Once(2) && d.tags(&p.Tags)
		}
		return d.UnknownField(key, portFields)
	})
	if ok {
		return p, "scanner", nil
	}
	p = Port{}
	err := json.Unmarshal(b, &p)
	return p, "json.Unmarshal", err
}

func Example() {
	for _, in := range []string{
		`{"name":"http","number":80,"tags":["web"],"comment":{"any":[1.5,null]}}`,
		`{"name":"h\u0074tp","number":80}`, // an escape
		`{"name":"http","Number":80}`,      // a field name in another case
		`{"name":"http","number":-1}`,      // out of range
	} {
		p, by, err := decodePort([]byte(in))
		fmt.Printf("%+v by %s, err %v\n", p, by, err)
	}
	// Output:
	// {Name:http Number:80 Tags:[web]} by scanner, err <nil>
	// {Name:http Number:80 Tags:[]} by json.Unmarshal, err <nil>
	// {Name:http Number:80 Tags:[]} by json.Unmarshal, err <nil>
	// {Name:http Number:0 Tags:[]} by json.Unmarshal, err json: cannot unmarshal number -1 into Go struct field Port.number of type uint32
}
